"""The official Dapr Python SDK's configuration API against a running sidecar, with values
changed directly in the backing store (Redis or PostgreSQL) while subscribed.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT,
CONFIG_STORE, and SET_COMMAND: a shell command template with {key} and {value} placeholders
that changes one key directly in the backing store (e.g. a redis-cli or psql call).
"""

import os
import queue
import shlex
import subprocess
import sys
import uuid

from dapr.clients import DaprClient

STORE = os.environ.get('CONFIG_STORE', 'configstore')
SET_COMMAND = os.environ['SET_COMMAND']
RUN = uuid.uuid4().hex[:8]


def check(name, condition, detail=''):
    print(('ok   ' if condition else 'FAIL ') + name + (f': {detail}' if detail and not condition else ''), flush=True)
    if not condition:
        sys.exit(1)


def set_directly(key, value):
    cmd = SET_COMMAND.format(key=shlex.quote(key), value=shlex.quote(value))
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


k1, k2 = f'py-cfg-{RUN}-1', f'py-cfg-{RUN}-2'
set_directly(k1, 'blue')
set_directly(k2, 'ten')

with DaprClient() as d:
    got = d.get_configuration(STORE, [k1, k2])
    check('get_configuration returns both keys', got.items.get(k1) is not None and got.items[k1].value == 'blue', got.items)
    check('second key value', got.items[k2].value == 'ten', got.items)

    updates = queue.Queue()
    sub_id = d.subscribe_configuration(STORE, [k1], lambda id, resp: updates.put((id, resp)))
    check('subscribe_configuration returns an id', bool(sub_id), sub_id)

    set_directly(k2, 'not-watched')
    set_directly(k1, 'green')
    try:
        got_id, resp = updates.get(timeout=10)
    except queue.Empty:
        check('an update arrives after a direct change', False)
    check('the update carries the subscription id', got_id == sub_id, got_id)
    check('the update carries the new value', k1 in resp.items and resp.items[k1].value == 'green', resp.items)
    check('unwatched keys are not reported', k2 not in resp.items, resp.items)

    check('unsubscribe_configuration', d.unsubscribe_configuration(STORE, sub_id) is True)
    check('unsubscribing twice reports failure', d.unsubscribe_configuration(STORE, sub_id) is False)
print('all configuration checks passed')
