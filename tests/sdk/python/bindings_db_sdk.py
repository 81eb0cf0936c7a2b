"""The official Dapr Python SDK's invoke_binding (gRPC) on the database output bindings.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT and the
binding names REDIS_BINDING, POSTGRES_BINDING and MYSQL_BINDING in the environment. Exits 1
on the first failed check.
"""

import json
import os
import sys
import uuid

import grpc
from dapr.clients import DaprClient

REDIS = os.environ.get('REDIS_BINDING', 'kv')
POSTGRES = os.environ.get('POSTGRES_BINDING', 'pg')
MYSQL = os.environ.get('MYSQL_BINDING', 'my')


def check(name, condition):
    print(('ok   ' if condition else 'FAIL ') + name, flush=True)
    if not condition:
        sys.exit(1)


def fails(name, call, needle):
    try:
        call()
    except grpc.RpcError as e:
        check(name + ' (' + str(e.details()) + ')', needle in str(e.details()))
        return
    check(name + ' raised no error', False)


def sql_checks(d, binding, p1, p2, row):
    table = 'py_sdk_' + uuid.uuid4().hex[:12]
    d.invoke_binding(binding, 'exec', '', {'sql': f'CREATE TABLE {table} (id int, name varchar(100))'})
    evil = f"'); DROP TABLE {table}; --"
    insert = f'INSERT INTO {table} (id, name) VALUES ({p1}, {p2})'
    for i, name in [(1, 'alice'), (2, evil)]:
        r = d.invoke_binding(binding, 'exec', '', {'sql': insert, 'params': json.dumps([i, name])})
        check(f'{binding}: exec reports rows-affected', r.binding_metadata.get('rows-affected') == '1')
        check(f'{binding}: exec echoes the sql', r.binding_metadata.get('sql') == insert)
        check(f'{binding}: exec reports timings', 'start-time' in r.binding_metadata and 'duration' in r.binding_metadata)
    r = d.invoke_binding(binding, 'query', '', {'sql': f'SELECT id, name FROM {table} ORDER BY id'})
    check(f'{binding}: query returns the rows, injection stored literally', r.json() == [row(1, 'alice'), row(2, evil)])
    check(f'{binding}: query reports its operation', r.binding_metadata.get('operation') == 'query')
    fails(f'{binding}: bad SQL fails with the server message',
          lambda: d.invoke_binding(binding, 'query', '', {'sql': f'SELEC * FROM {table}'}), 'syntax')
    fails(f'{binding}: unknown operation lists the supported ones',
          lambda: d.invoke_binding(binding, 'upsert', '', {'sql': 'SELECT 1'}), 'exec')
    d.invoke_binding(binding, 'exec', '', {'sql': f'DROP TABLE {table}'})


with DaprClient() as d:
    key = 'py-sdk-' + uuid.uuid4().hex[:8]
    d.invoke_binding(REDIS, 'create', 'hello', {'key': key})
    check('redis: get returns the stored bytes', d.invoke_binding(REDIS, 'get', '', {'key': key}).data == b'hello')
    counter = key + '-n'
    d.invoke_binding(REDIS, 'increment', '', {'key': counter})
    d.invoke_binding(REDIS, 'increment', '', {'key': counter, 'ttlInSeconds': '60'})
    check('redis: increment counts', d.invoke_binding(REDIS, 'get', '', {'key': counter}).text() == '2')
    d.invoke_binding(REDIS, 'delete', '', {'key': key})
    d.invoke_binding(REDIS, 'delete', '', {'key': counter})
    check('redis: a deleted key reads empty', d.invoke_binding(REDIS, 'get', '', {'key': key}).data == b'')
    fails('redis: a missing key is refused', lambda: d.invoke_binding(REDIS, 'create', 'x', {}), 'key')

    sql_checks(d, POSTGRES, '$1', '$2', lambda i, n: [i, n])
    sql_checks(d, MYSQL, '?', '?', lambda i, n: {'id': i, 'name': n})
print('all database binding checks passed')
