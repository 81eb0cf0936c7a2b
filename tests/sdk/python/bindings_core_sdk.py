"""The official Dapr Python SDK's output bindings (`invoke_binding`, gRPC) against a running
sidecar: `bindings.http` towards a server run by the Rust test, and `bindings.localstorage`.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT,
HTTP_BINDING, FILES_BINDING and FILES_ROOT (the localstorage rootPath, checked on disk).
Exits 1 on the first failed check.
"""

import base64
import json
import os
import sys

from dapr.clients import DaprClient

HTTP_BINDING = os.environ.get('HTTP_BINDING', 'web')
FILES_BINDING = os.environ.get('FILES_BINDING', 'files')
FILES_ROOT = os.environ['FILES_ROOT']


def check(name, condition, detail=''):
    print(('ok   ' if condition else 'FAIL ') + name + (f': {detail}' if detail and not condition else ''), flush=True)
    if not condition:
        sys.exit(1)


def fails(name, call, expected):
    try:
        call()
    except Exception as e:  # the SDK raises DaprGrpcError; match on the text
        check(name, expected in str(e), str(e))
        return
    check(name, False, 'no error raised')


with DaprClient() as d:
    # bindings.http: the payload goes as is (gRPC), the response body and metadata come back.
    r = d.invoke_binding(HTTP_BINDING, 'post', json.dumps({'n': 42}),
                         {'path': '/things/1', 'X-Custom': 'from-python'})
    check('http post returns the body', r.json() == {'n': 42}, r.data)
    md = r.binding_metadata
    check('http statusCode metadata', md.get('statusCode') == '201', md)
    check('http status metadata', md.get('status') == '201 Created', md)
    check('capitalised metadata is sent as a header', md.get('X-Seen-Custom') == 'from-python', md)
    r = d.invoke_binding(HTTP_BINDING, 'get', '', {'path': '/things/2'})
    check('http get returns an empty body', r.data == b'', r.data)
    fails('http error status is an error',
          lambda: d.invoke_binding(HTTP_BINDING, 'get', '', {'path': '/things/missing'}),
          'received status code 404')
    fails('unknown operation lists the supported ones',
          lambda: d.invoke_binding(HTTP_BINDING, 'fly', ''), 'get, head, post')

    # bindings.localstorage.
    r = d.invoke_binding(FILES_BINDING, 'create', b'hello sdk', {'fileName': 'py/one.txt'})
    check('create answers the file name', r.json() == {'fileName': 'py/one.txt'}, r.data)
    check('create metadata names the file', r.binding_metadata.get('fileName') == 'py/one.txt')
    with open(os.path.join(FILES_ROOT, 'py', 'one.txt'), 'rb') as f:
        check('the file holds the bytes as sent', f.read() == b'hello sdk')
    r = d.invoke_binding(FILES_BINDING, 'create', base64.b64encode(b'\x00\x01\xff'),
                         {'fileName': 'py/bin', 'decodeBase64': 'true'})
    r = d.invoke_binding(FILES_BINDING, 'get', '', {'fileName': 'py/bin'})
    check('decodeBase64 writes the decoded bytes', r.data == b'\x00\x01\xff', r.data)
    r = d.invoke_binding(FILES_BINDING, 'get', '', {'fileName': 'py/bin', 'encodeBase64': 'true'})
    check('encodeBase64 reads them back encoded', r.data == base64.b64encode(b'\x00\x01\xff'), r.data)
    r = d.invoke_binding(FILES_BINDING, 'list', '', {'fileName': 'py'})
    check('list gives the files under the folder', r.json() == ['py/bin', 'py/one.txt'], r.data)
    d.invoke_binding(FILES_BINDING, 'delete', '', {'fileName': 'py/one.txt'})
    check('delete removes the file', not os.path.exists(os.path.join(FILES_ROOT, 'py', 'one.txt')))
    fails('a path escaping the root is refused',
          lambda: d.invoke_binding(FILES_BINDING, 'get', '', {'fileName': '../../etc/passwd'}),
          'outside the root folder')
    fails('get of a missing file fails',
          lambda: d.invoke_binding(FILES_BINDING, 'get', '', {'fileName': 'py/one.txt'}),
          'file not found')

print('bindings_core_sdk: all checks passed', flush=True)
