"""The official Dapr Python SDK's `invoke_binding` (gRPC) on `bindings.mqtt3` and
`bindings.rabbitmq` against a running sidecar; the Rust test checks that its HTTP app
received the messages through the same bindings' input side.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT,
MQTT_BINDING and RABBITMQ_BINDING. Exits 1 on the first failed check.
"""

import os
import sys

from dapr.clients import DaprClient

MQTT_BINDING = os.environ.get('MQTT_BINDING', 'mq')
RABBITMQ_BINDING = os.environ.get('RABBITMQ_BINDING', 'rq')


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
    r = d.invoke_binding(MQTT_BINDING, 'create', b'from-python-mqtt')
    check('mqtt create answers no data', r.data == b'', r.data)
    r = d.invoke_binding(RABBITMQ_BINDING, 'create', b'from-python-rabbitmq',
                         {'custom': 'py', 'priority': '1'})
    check('rabbitmq create answers no data', r.data == b'', r.data)
    fails('mqtt unknown operation lists create',
          lambda: d.invoke_binding(MQTT_BINDING, 'get', b''), 'create')
    fails('rabbitmq bad ttl is refused',
          lambda: d.invoke_binding(RABBITMQ_BINDING, 'create', b'x', {'ttlInSeconds': 'soon'}),
          'ttlInSeconds')

print('all checks passed', flush=True)
