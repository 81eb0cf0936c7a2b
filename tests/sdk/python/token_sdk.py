"""The official Dapr Python SDK against a sidecar started with DAPR_API_TOKEN.

Run by crates/mecha/tests/e2e/python_sdk.rs with the venv made by scripts/setup-venv.sh:

    DAPR_API_TOKEN=s3cret DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001 STORE=statestore \
        .venv/bin/python tests/sdk/python/token_sdk.py

The SDK reads DAPR_API_TOKEN from the environment through `dapr.conf.settings`, when a
DaprClient is built (in 1.19 the settings object reads the environment on every access; an
attribute assigned on it would win, so this script never assigns one). The constructor polls
GET /v1.0/healthz/outbound, which is exempt from the token, so a client with a wrong or no
token is built fine and fails on its first gRPC call.
"""

import os
import sys
import traceback
import uuid

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.conf import settings

STORE = os.environ.get('STORE', 'statestore')
TOKEN = os.environ.get('DAPR_API_TOKEN')
RUN = uuid.uuid4().hex[:12]
KEY = f'py-token-{RUN}'


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def use_token(token):
    """Makes the next DaprClient use `token` (None: no token at all)."""
    if token is None:
        os.environ.pop('DAPR_API_TOKEN', None)
    else:
        os.environ['DAPR_API_TOKEN'] = token
    # Guard against an SDK that caches the setting: the client must really see this token.
    expect(settings.DAPR_API_TOKEN == token, f'dapr.conf.settings.DAPR_API_TOKEN is {settings.DAPR_API_TOKEN!r}, not {token!r}')


def expect_unauthenticated(call, what):
    try:
        call()
    except grpc.RpcError as err:
        expect(
            err.code() == grpc.StatusCode.UNAUTHENTICATED,
            f'{what}: expected UNAUTHENTICATED, got {err.code().name}: {err.details()}',
        )
        return err
    raise CheckFailed(f'{what}: the call succeeded without the right token')


def check_round_trip():
    use_token(TOKEN)
    with DaprClient() as d:
        d.save_state(STORE, KEY, 'with the token')
        r = d.get_state(STORE, KEY)
        expect(r.data == b'with the token', f'data: {r.data!r}')
        expect(r.etag != '', 'etag is empty')
        md = d.get_metadata()
        expect(any(c.name == STORE for c in md.registered_components), 'store not in metadata')


def check_wrong_token():
    use_token('wrong-' + RUN)
    with DaprClient() as d:  # the health probe is exempt: this must not hang or fail
        err = expect_unauthenticated(lambda: d.get_state(STORE, KEY), 'get_state with a wrong token')
        expect_unauthenticated(lambda: d.save_state(STORE, KEY, 'overwritten'), 'save_state with a wrong token')
        expect_unauthenticated(lambda: d.get_metadata(), 'get_metadata with a wrong token')
    return f'{err.code().name}: {err.details()}'


def check_missing_token():
    use_token(None)
    with DaprClient() as d:
        err = expect_unauthenticated(lambda: d.get_state(STORE, KEY), 'get_state without a token')
        expect_unauthenticated(lambda: d.delete_state(STORE, KEY), 'delete_state without a token')
    return f'{err.code().name}: {err.details()}'


def check_value_untouched():
    use_token(TOKEN)
    with DaprClient() as d:
        r = d.get_state(STORE, KEY)
        expect(r.data == b'with the token', f'the refused calls changed the value: {r.data!r}')
        d.delete_state(STORE, KEY)


CHECKS = [
    ('round trip with the right token', check_round_trip),
    ('wrong token is UNAUTHENTICATED', check_wrong_token),
    ('missing token is UNAUTHENTICATED', check_missing_token),
    ('refused calls changed nothing', check_value_untouched),
]


def main():
    if not TOKEN:
        print('token_sdk: DAPR_API_TOKEN must be set (to the sidecar\'s token)', file=sys.stderr)
        sys.exit(2)
    print(f'token_sdk: store={STORE} http={os.environ.get("DAPR_HTTP_PORT")} grpc={os.environ.get("DAPR_GRPC_PORT")}', flush=True)
    passed, failed = 0, []
    for name, check in CHECKS:
        try:
            note = check()
        except CheckFailed as e:
            failed.append(name)
            print(f'FAIL: {name}: {e}', flush=True)
        except Exception as e:
            failed.append(name)
            detail = e.json() if isinstance(e, DaprGrpcError) else repr(e)
            print(f'FAIL: {name}: unexpected {type(e).__name__}: {detail}', flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f'ok: {name}' + (f' ({note})' if note else ''), flush=True)
    print(f'token_sdk: {passed} passed, {len(failed)} failed', flush=True)
    if failed:
        print(f'token_sdk: FAILED: {", ".join(failed)}', file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == '__main__':
    main()
