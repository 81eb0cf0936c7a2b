"""The official Dapr Python SDK's distributed lock API against a running sidecar.

Run by crates/mecha/tests/e2e/python_sdk.rs: DAPR_HTTP_PORT, DAPR_GRPC_PORT and LOCK_STORE in
the environment. Exits 1 on the first failed check.
"""

import os
import sys
import time
import uuid
import warnings

from dapr.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

warnings.filterwarnings('ignore', message='The Distributed Lock API is an Alpha version')
STORE = os.environ.get('LOCK_STORE', 'lockstore')


def check(name, condition):
    print(('ok   ' if condition else 'FAIL ') + name, flush=True)
    if not condition:
        sys.exit(1)


with DaprClient() as d:
    resource = 'py-lock-' + uuid.uuid4().hex[:8]
    first = d.try_lock(STORE, resource, 'alice', 30)
    check('try_lock takes a free lock', bool(first) and first.success)
    check('try_lock of a held lock fails', not d.try_lock(STORE, resource, 'bob', 30).success)
    check('unlock by another owner', d.unlock(STORE, resource, 'bob').status == UnlockResponseStatus.lock_belongs_to_others)
    check('unlock by the owner', d.unlock(STORE, resource, 'alice').status == UnlockResponseStatus.success)
    check('unlock of a released lock', d.unlock(STORE, resource, 'alice').status == UnlockResponseStatus.lock_does_not_exist)

    with d.try_lock(STORE, resource, 'carol', 30) as lock:
        check('try_lock as a context manager', bool(lock))
        check('held inside the with-block', not d.try_lock(STORE, resource, 'dave', 30).success)
    check('released after the with-block', d.unlock(STORE, resource, 'carol').status == UnlockResponseStatus.lock_does_not_exist)

    expiring = resource + '-exp'
    check('lock with a 1 s expiry', d.try_lock(STORE, expiring, 'erin', 1).success)
    time.sleep(1.5)
    check('expired lock is free again', d.try_lock(STORE, expiring, 'frank', 30).success)
print('all lock checks passed')
