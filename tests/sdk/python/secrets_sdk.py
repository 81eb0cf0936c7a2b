"""The official Dapr Python SDK's secrets API against a running sidecar.

Run by crates/mecha/tests/e2e/python_sdk.rs with the venv made by scripts/setup-venv.sh:

    DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001 FILE_STORE=filestore MULTI_STORE=multistore \
        ENV_STORE=envstore .venv/bin/python tests/sdk/python/secrets_sdk.py

The sidecar must serve these stores over the secrets file
`{"db": {"user": "u", "pass": "p"}, "token": "t", "unicode": "wörld ✓"}`:

- FILE_STORE: `secretstores.local.file`, flat, scoped by `defaultAccess: deny` and
  `allowedSecrets: [token, "db:user", unicode]`;
- MULTI_STORE: the same file with `multiValued: "true"`, no scope;
- ENV_STORE: `secretstores.local.env` seeing the variables API_KEY=k and OTHER=o (through its
  prefix), scoped by `deniedSecrets: [API_KEY]`.

Uses `dapr.clients.DaprClient` unchanged (gRPC). Prints one line per check, runs every check even
after a failure and exits 1 if any failed.
"""

import os
import sys
import traceback
import uuid

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError

FILE_STORE = os.environ.get('FILE_STORE', 'filestore')
MULTI_STORE = os.environ.get('MULTI_STORE', 'multistore')
ENV_STORE = os.environ.get('ENV_STORE', 'envstore')
RUN = uuid.uuid4().hex[:12]


class CheckFailed(Exception):
    pass


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f'{what}: expected {want!r}, got {got!r}')


def expect_grpc_error(call, code, what):
    """Runs `call`, which must raise a gRPC error with `code`; returns it."""
    try:
        call()
    except grpc.RpcError as err:  # DaprGrpcError is an RpcError
        if err.code() != code:
            raise CheckFailed(f'{what}: expected {code.name}, got {err.code().name}: {err.details()}')
        return err
    raise CheckFailed(f'{what}: expected an error, the call succeeded')


# --- checks -------------------------------------------------------------------------------------


def check_get_secret(d):
    expect_eq(d.get_secret(FILE_STORE, 'db:user').secret, {'db:user': 'u'}, 'nested key')
    expect_eq(d.get_secret(FILE_STORE, 'token').secret, {'token': 't'}, 'top-level key')
    expect_eq(d.get_secret(FILE_STORE, 'unicode').secret, {'unicode': 'wörld ✓'}, 'non-ASCII value')
    expect_eq(d.get_secret(MULTI_STORE, 'db').secret, {'user': 'u', 'pass': 'p'}, 'multi-valued')
    expect_eq(d.get_secret(ENV_STORE, 'OTHER').secret, {'OTHER': 'o'}, 'environment variable')
    # Request metadata is passed through and ignored by these stores.
    r = d.get_secret(FILE_STORE, 'token', secret_metadata={'version_id': '1'})
    expect_eq(r.secret, {'token': 't'}, 'with metadata')


def check_get_bulk_secret(d):
    expect_eq(
        d.get_bulk_secret(MULTI_STORE).secrets,
        {'db': {'user': 'u', 'pass': 'p'}, 'token': {'token': 't'}, 'unicode': {'unicode': 'wörld ✓'}},
        f'{MULTI_STORE} (no scope)',
    )
    # The scopes filter bulk reads.
    expect_eq(
        d.get_bulk_secret(FILE_STORE).secrets,
        {'db:user': {'db:user': 'u'}, 'token': {'token': 't'}, 'unicode': {'unicode': 'wörld ✓'}},
        f'{FILE_STORE} (allowedSecrets)',
    )
    expect_eq(d.get_bulk_secret(ENV_STORE).secrets, {'OTHER': {'OTHER': 'o'}}, f'{ENV_STORE} (deniedSecrets)')


def check_denied(d):
    notes = []
    for store, key in [(FILE_STORE, 'db:pass'), (FILE_STORE, 'never-defined'), (ENV_STORE, 'API_KEY')]:
        err = expect_grpc_error(
            lambda: d.get_secret(store, key), grpc.StatusCode.PERMISSION_DENIED, f'{store}/{key}'
        )
        notes.append(err.details())
    return notes[0]


def check_missing_secret(d):
    err = expect_grpc_error(
        lambda: d.get_secret(MULTI_STORE, 'missing-' + RUN), grpc.StatusCode.INTERNAL, 'missing secret'
    )
    return err.details()


def check_unknown_store(d):
    store = 'no-such-store-' + RUN
    err = expect_grpc_error(
        lambda: d.get_secret(store, 'token'), grpc.StatusCode.INVALID_ARGUMENT, 'get_secret'
    )
    expect_grpc_error(
        lambda: d.get_bulk_secret(store), grpc.StatusCode.INVALID_ARGUMENT, 'get_bulk_secret'
    )
    return f'{err.code().name}: {err.details()}'


CHECKS = [
    ('get_secret', check_get_secret),
    ('get_bulk_secret', check_get_bulk_secret),
    ('denied secret', check_denied),
    ('missing secret', check_missing_secret),
    ('unknown store', check_unknown_store),
]


def main():
    print(
        f'secrets_sdk: stores={FILE_STORE},{MULTI_STORE},{ENV_STORE} '
        f'http={os.environ.get("DAPR_HTTP_PORT")} grpc={os.environ.get("DAPR_GRPC_PORT")}',
        flush=True,
    )
    passed, failed = 0, []
    with DaprClient() as d:
        for name, check in CHECKS:
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
    print(f'secrets_sdk: {passed} passed, {len(failed)} failed', flush=True)
    if failed:
        print(f'secrets_sdk: FAILED: {", ".join(failed)}', file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == '__main__':
    main()
