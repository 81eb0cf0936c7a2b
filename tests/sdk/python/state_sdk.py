"""The official Dapr Python SDK's state and metadata API against a running sidecar.

Run by crates/mecha/tests/e2e/python_sdk.rs with the venv made by scripts/setup-venv.sh:

    DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001 STORE=statestore [QUERY=1] [EXPECT_APP_ID=x] \
        .venv/bin/python tests/sdk/python/state_sdk.py

Uses `dapr.clients.DaprClient` unchanged (gRPC for state and metadata). Prints one line per
check, runs every check even after a failure and exits 1 if any failed.
"""

import json
import os
import sys
import time
import traceback
import uuid
import warnings

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

STORE = os.environ.get('STORE', 'statestore')
RUN = uuid.uuid4().hex[:12]
PREFIX = f'py-{RUN}-'

# The state query API is alpha; the SDK warns on every call.
warnings.filterwarnings('ignore', message='The State Store Query API is an Alpha version')


class CheckFailed(Exception):
    pass


def key(name):
    return PREFIX + name


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f'{what}: expected {want!r}, got {got!r}')


def expect_grpc_error(call, codes, what):
    """Runs `call`, which must raise a gRPC error whose code is one of `codes`; returns it."""
    if isinstance(codes, grpc.StatusCode):
        codes = (codes,)
    try:
        call()
    except grpc.RpcError as err:  # DaprGrpcError is an RpcError
        code = err.code()
        if code not in codes:
            names = '/'.join(c.name for c in codes)
            raise CheckFailed(f'{what}: expected {names}, got {code.name}: {err.details()}')
        return err
    raise CheckFailed(f'{what}: expected an error, the call succeeded')


def value_of(d, k):
    return d.get_state(STORE, k).data


# --- checks -------------------------------------------------------------------------------------


def check_save_get_string(d):
    k = key('string')
    text = 'hello wörld ✓'
    d.save_state(STORE, k, text)
    r = d.get_state(STORE, k)
    expect_eq(r.data, text.encode('utf-8'), 'data')
    expect(isinstance(r.etag, str) and r.etag != '', f'etag is empty: {r.etag!r}')
    return f'etag={r.etag!r}'


def check_save_get_bytes(d):
    k = key('bytes')
    raw = bytes(range(256)) + b'\x00\xff' + b'{"not": "json"'
    d.save_state(STORE, k, raw)
    r = d.get_state(STORE, k)
    expect_eq(r.data, raw, 'data')
    expect(r.etag != '', 'etag is empty')
    # A JSON document comes back byte for byte too (no re-encoding).
    doc = b'{ "b":1,  "a":[1, 2] }'
    d.save_state(STORE, k, doc)
    expect_eq(value_of(d, k), doc, 'json data')
    return f'{len(raw)} bytes'


def check_get_missing(d):
    r = d.get_state(STORE, key('never-saved'))
    expect_eq(r.data, b'', 'data')
    expect_eq(r.etag, '', 'etag')


def check_ttl(d):
    k = key('ttl')
    d.save_state(STORE, k, 'short-lived', state_metadata={'ttlInSeconds': '1'})
    saved = time.monotonic()
    expect_eq(value_of(d, k), b'short-lived', 'data right after the save')
    while True:
        data = value_of(d, k)
        elapsed = time.monotonic() - saved
        if data == b'':
            expect(elapsed >= 0.5, f'gone after only {elapsed:.2f}s')
            return f'gone after {elapsed:.1f}s'
        expect(elapsed < 3.5, f'still there after {elapsed:.1f}s: {data!r}')
        time.sleep(0.1)


def check_bulk(d):
    k1, k2, k3, missing = key('bulk-1'), key('bulk-2'), key('bulk-3'), key('bulk-missing')
    d.save_bulk_state(
        STORE,
        [
            StateItem(key=k1, value='one'),
            StateItem(key=k2, value=b'\x00two\xff'),
            StateItem(key=k3, value='{"three":3}'),
        ],
    )
    keys = [k3, missing, k1, k2]
    resp = d.get_bulk_state(STORE, keys)
    expect_eq([i.key for i in resp.items], keys, 'item keys (order)')
    by_key = {i.key: i for i in resp.items}
    expect_eq(by_key[k1].data, b'one', 'k1 data')
    expect_eq(by_key[k2].data, b'\x00two\xff', 'k2 data')
    expect_eq(by_key[k3].data, b'{"three":3}', 'k3 data')
    for k in (k1, k2, k3):
        expect(by_key[k].etag != '', f'{k} has no etag')
        expect_eq(by_key[k].error, '', f'{k} error')
        expect_eq(by_key[k].etag, d.get_state(STORE, k).etag, f'{k} etag vs get_state')
    expect_eq(by_key[missing].data, b'', 'missing item data')
    expect_eq(by_key[missing].etag, '', 'missing item etag')
    expect_eq(by_key[missing].error, '', 'missing item error')
    # Parallel reads give the same answer.
    resp = d.get_bulk_state(STORE, keys, parallelism=3)
    expect_eq([(i.key, i.data) for i in resp.items], [(k, by_key[k].data) for k in keys], 'parallel')


def check_delete(d):
    k = key('delete')
    d.save_state(STORE, k, 'to delete')
    expect_eq(value_of(d, k), b'to delete', 'data before delete')
    d.delete_state(STORE, k)
    r = d.get_state(STORE, k)
    expect_eq((r.data, r.etag), (b'', ''), 'after delete')
    # Deleting an absent key is not an error.
    d.delete_state(STORE, k)


def check_etag_save(d):
    k = key('etag-save')
    d.save_state(STORE, k, 'v1')
    etag1 = d.get_state(STORE, k).etag
    d.save_state(STORE, k, 'v2')
    etag2 = d.get_state(STORE, k).etag
    expect(etag1 != etag2, f'the etag did not change on a write: {etag1!r}')
    err = expect_grpc_error(
        lambda: d.save_state(STORE, k, 'v3-stale', etag=etag1),
        grpc.StatusCode.ABORTED,
        'save with a stale etag',
    )
    expect(isinstance(err, DaprGrpcError), f'not a DaprGrpcError: {type(err)}')
    expect_eq(value_of(d, k), b'v2', 'data after the refused save')
    d.save_state(STORE, k, 'v3', etag=etag2)
    r = d.get_state(STORE, k)
    expect_eq(r.data, b'v3', 'data after the save with the right etag')
    expect(r.etag not in (etag1, etag2, ''), f'no new etag after the save: {r.etag!r}')
    # An etag on a key that does not exist never matches.
    expect_grpc_error(
        lambda: d.save_state(STORE, key('etag-absent'), 'x', etag=etag2),
        grpc.StatusCode.ABORTED,
        'save with an etag on an absent key',
    )
    expect_eq(value_of(d, key('etag-absent')), b'', 'absent key after the refused save')
    return f'{err.code().name}: {err.details()}'


def check_etag_garbage(d):
    # An etag the store could never have produced: Dapr answers ABORTED (mismatch) or
    # INVALID_ARGUMENT (invalid etag) depending on the store; both are accepted.
    k = key('etag-garbage')
    d.save_state(STORE, k, 'v1')
    err = expect_grpc_error(
        lambda: d.save_state(STORE, k, 'v2', etag='not-an-etag-' + RUN),
        (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT),
        'save with a made-up etag',
    )
    expect_eq(value_of(d, k), b'v1', 'data after the refused save')
    return err.code().name


def check_etag_delete(d):
    k = key('etag-delete')
    d.save_state(STORE, k, 'v1')
    stale = d.get_state(STORE, k).etag
    d.save_state(STORE, k, 'v2')
    current = d.get_state(STORE, k).etag
    expect_grpc_error(
        lambda: d.delete_state(STORE, k, etag=stale),
        grpc.StatusCode.ABORTED,
        'delete with a stale etag',
    )
    expect_eq(value_of(d, k), b'v2', 'data after the refused delete')
    d.delete_state(STORE, k, etag=current)
    expect_eq(value_of(d, k), b'', 'data after the delete with the right etag')


def check_first_write(d):
    first = StateOptions(concurrency=Concurrency.first_write)
    k = key('first-write')
    # On an absent key, a first-write save without etag inserts.
    d.save_state(STORE, k, 'first', options=first)
    expect_eq(value_of(d, k), b'first', 'data after the first write')
    # On an existing key it must carry the etag.
    err = expect_grpc_error(
        lambda: d.save_state(STORE, k, 'second', options=first),
        tuple(grpc.StatusCode),
        'first-write save without etag on an existing key',
    )
    expect_eq(value_of(d, k), b'first', 'data after the refused first write')
    etag = d.get_state(STORE, k).etag
    d.save_state(STORE, k, 'second', etag=etag, options=first)
    expect_eq(value_of(d, k), b'second', 'data after a first write with the etag')
    # Last-write (the default) without etag overwrites.
    d.save_state(STORE, k, 'third', options=StateOptions(concurrency=Concurrency.last_write))
    expect_eq(value_of(d, k), b'third', 'data after a last write')
    return f'refused with {err.code().name}'


def check_transaction(d):
    k1, k2, k3, k4 = key('tx-1'), key('tx-2'), key('tx-3'), key('tx-4')
    d.save_state(STORE, k1, 'old-1')
    d.save_state(STORE, k3, 'doomed')
    etag1 = d.get_state(STORE, k1).etag
    d.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key=k1, data='new-1', etag=etag1),
            TransactionalStateOperation(key=k2, data='v2-a'),
            TransactionalStateOperation(key=k3, operation_type=TransactionOperationType.delete),
            TransactionalStateOperation(key=k2, data=b'v2-b'),
            TransactionalStateOperation(key=k4, data='v4'),
            TransactionalStateOperation(key=k4, operation_type=TransactionOperationType.delete),
        ],
    )
    expect_eq(value_of(d, k1), b'new-1', 'k1 (upsert with etag)')
    expect_eq(value_of(d, k2), b'v2-b', 'k2 (the later upsert wins)')
    expect_eq(value_of(d, k3), b'', 'k3 (deleted)')
    expect_eq(value_of(d, k4), b'', 'k4 (upserted then deleted)')
    expect(d.get_state(STORE, k1).etag not in ('', etag1), 'k1 has no new etag')


def check_transaction_rollback(d):
    k1, k5 = key('txr-1'), key('txr-5')
    d.save_state(STORE, k1, 'v1')
    stale = d.get_state(STORE, k1).etag
    d.save_state(STORE, k1, 'v2')
    err = expect_grpc_error(
        lambda: d.execute_state_transaction(
            STORE,
            [
                TransactionalStateOperation(key=k5, data='must not be applied'),
                TransactionalStateOperation(key=k1, data='stale write', etag=stale),
            ],
        ),
        tuple(grpc.StatusCode),
        'transaction with a stale etag in its second operation',
    )
    expect_eq(value_of(d, k5), b'', 'first operation of the failed transaction')
    expect_eq(value_of(d, k1), b'v2', 'second operation of the failed transaction')
    return f'refused with {err.code().name}'


def check_query(d):
    tag = 'q-' + RUN
    docs = {
        key('q-a'): {'tag': tag, 'n': 2, 'city': 'Lyon', 'person': {'name': 'a'}},
        key('q-b'): {'tag': tag, 'n': 0, 'city': 'Paris', 'person': {'name': 'b'}},
        key('q-c'): {'tag': tag, 'n': 1, 'city': 'Paris', 'person': {'name': 'c'}},
        key('q-other'): {'tag': 'other-' + RUN, 'n': 5, 'city': 'Paris', 'person': {'name': 'o'}},
    }
    d.save_bulk_state(STORE, [StateItem(key=k, value=json.dumps(v)) for k, v in docs.items()])

    query = {'filter': {'EQ': {'tag': tag}}, 'sort': [{'key': 'n', 'order': 'DESC'}]}
    resp = d.query_state(STORE, json.dumps(query))
    expect_eq([r.key for r in resp.results], [key('q-a'), key('q-c'), key('q-b')], 'keys (n DESC)')
    for r in resp.results:
        expect_eq(r.json(), docs[r.key], f'{r.key} value')
        expect(r.etag != '', f'{r.key} has no etag')
        expect_eq(r.etag, d.get_state(STORE, r.key).etag, f'{r.key} etag vs get_state')

    query = {
        'filter': {'AND': [{'EQ': {'tag': tag}}, {'EQ': {'city': 'Paris'}}]},
        'sort': [{'key': 'person.name', 'order': 'ASC'}],
    }
    resp = d.query_state(STORE, json.dumps(query))
    expect_eq([r.key for r in resp.results], [key('q-b'), key('q-c')], 'keys (AND, nested sort)')

    # Paging: two, then the rest.
    query = {'filter': {'EQ': {'tag': tag}}, 'sort': [{'key': 'n'}], 'page': {'limit': 2}}
    page1 = d.query_state(STORE, json.dumps(query))
    expect_eq([r.key for r in page1.results], [key('q-b'), key('q-c')], 'page 1 keys')
    expect(page1.token != '', 'page 1 has no token')
    query['page']['token'] = page1.token
    page2 = d.query_state(STORE, json.dumps(query))
    expect_eq([r.key for r in page2.results], [key('q-a')], 'page 2 keys')


def check_unknown_store(d):
    store = 'no-such-store-' + RUN
    err = expect_grpc_error(
        lambda: d.get_state(store, key('x')),
        grpc.StatusCode.INVALID_ARGUMENT,
        'get_state on an unknown store',
    )
    expect(isinstance(err, DaprGrpcError), f'not a DaprGrpcError: {type(err)}')
    details = err.status_details()
    expect(details.error_info is not None, f'no ErrorInfo in the status details: {err.json()}')
    expect_eq(err.error_code(), 'DAPR_STATE_NOT_FOUND', 'ErrorInfo reason')
    expect_eq(details.error_info.get('domain'), 'dapr.io', 'ErrorInfo domain')
    if details.resource_info is not None:
        expect_eq(details.resource_info.get('resource_type'), 'state', 'ResourceInfo type')
        expect_eq(details.resource_info.get('resource_name'), store, 'ResourceInfo name')
    # The other state calls say the same.
    for what, call in [
        ('save_state', lambda: d.save_state(store, key('x'), 'v')),
        ('delete_state', lambda: d.delete_state(store, key('x'))),
        ('get_bulk_state', lambda: d.get_bulk_state(store, [key('x')])),
        (
            'execute_state_transaction',
            lambda: d.execute_state_transaction(store, [TransactionalStateOperation(key=key('x'), data='v')]),
        ),
    ]:
        e = expect_grpc_error(call, grpc.StatusCode.INVALID_ARGUMENT, f'{what} on an unknown store')
        expect_eq(e.error_code(), 'DAPR_STATE_NOT_FOUND', f'{what} ErrorInfo reason')
    return f'{err.code().name} {err.error_code()}: {err.details()}'


def check_metadata(d):
    md = d.get_metadata()
    want_id = os.environ.get('EXPECT_APP_ID')
    if want_id:
        expect_eq(md.application_id, want_id, 'application_id')
    expect(md.application_id != '', 'application_id is empty')
    stores = [c for c in md.registered_components if c.name == STORE]
    expect(
        len(stores) == 1,
        f'store {STORE!r} not listed once: {[(c.name, c.type) for c in md.registered_components]}',
    )
    c = stores[0]
    expect(c.type.startswith('state.'), f'component type {c.type!r}')
    expect(c.version != '', 'component version is empty')
    caps = set(c.capabilities)
    for cap in ('ETAG', 'TRANSACTIONAL'):
        expect(cap in caps, f'capability {cap} missing from {sorted(caps)}')
    expect('daprRuntimeVersion' in md.extended_metadata, f'extended: {md.extended_metadata}')

    attr = 'python-sdk-' + RUN
    d.set_metadata(attr, 'value ✓ ' + RUN)
    md2 = d.get_metadata()
    expect_eq(md2.extended_metadata.get(attr), 'value ✓ ' + RUN, f'extended[{attr}]')
    d.set_metadata(attr, 'changed')
    expect_eq(d.get_metadata().extended_metadata.get(attr), 'changed', f'extended[{attr}] (overwritten)')
    return f'{c.name} {c.type}/{c.version} {sorted(caps)}'


CHECKS = [
    ('save_state/get_state string', check_save_get_string),
    ('save_state/get_state bytes', check_save_get_bytes),
    ('get_state missing key', check_get_missing),
    ('save_state ttlInSeconds=1 expires', check_ttl),
    ('save_bulk_state/get_bulk_state', check_bulk),
    ('delete_state', check_delete),
    ('etag conflict on save', check_etag_save),
    ('made-up etag on save', check_etag_garbage),
    ('etag conflict on delete', check_etag_delete),
    ('first-write concurrency', check_first_write),
    ('execute_state_transaction', check_transaction),
    ('execute_state_transaction rollback', check_transaction_rollback),
    ('query_state (alpha)', check_query),
    ('unknown store', check_unknown_store),
    ('get_metadata/set_metadata', check_metadata),
]


def main():
    query = os.environ.get('QUERY') == '1'
    print(
        f'state_sdk: store={STORE} http={os.environ.get("DAPR_HTTP_PORT")} '
        f'grpc={os.environ.get("DAPR_GRPC_PORT")} prefix={PREFIX} query={query}',
        flush=True,
    )
    passed, failed, skipped = 0, [], 0
    with DaprClient() as d:
        for name, check in CHECKS:
            if check is check_query and not query:
                print(f'skip: {name} (QUERY is not 1)', flush=True)
                skipped += 1
                continue
            try:
                note = check(d)
            except CheckFailed as e:
                failed.append(name)
                print(f'FAIL: {name}: {e}', flush=True)
            except Exception as e:  # an unexpected error from the SDK or the sidecar
                failed.append(name)
                detail = e.json() if isinstance(e, DaprGrpcError) else repr(e)
                print(f'FAIL: {name}: unexpected {type(e).__name__}: {detail}', flush=True)
                traceback.print_exc()
            else:
                passed += 1
                print(f'ok: {name}' + (f' ({note})' if note else ''), flush=True)
    print(f'state_sdk: {passed} passed, {len(failed)} failed, {skipped} skipped', flush=True)
    if failed:
        print(f'state_sdk: FAILED: {", ".join(failed)}', file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == '__main__':
    main()
