"""Set-up steps of the real Rucio server, run with the Python of Rucio's own virtual environment.

Test equipment, used by tests/servers/rucio_server.py: it runs this module once
per server, and the module runs the steps its standard input asks for, one
after the other (each Rucio process imports some 600 modules before its first
step). ``RUCIO_CONFIG`` names the server's rucio.cfg. ``database`` creates the
schema (stamped for alembic), the base VO and the root account; ``seed`` adds
the fixture data with Rucio's own Python client, as the root account of the
``[client]`` section; ``finish-transfer RSE SCOPE:NAME...`` marks replicas on
RSE available, as a finished transfer would (no Rucio daemons run);
``fail-transfer RSE SCOPE:NAME...`` marks them unavailable, as a failed one
would (their rules get STUCK); ``add-file RSE SCOPE:NAME BYTES ADLER32 MD5``
registers a file with a replica on RSE (its content is the caller's to write);
``set-limit RSE BYTES`` sets the user account's quota there; ``set-admin
yes|no`` gives the user account the ``admin`` attribute or takes it (Rucio
holds an admin to no quota); ``did-bytes SCOPE:NAME`` prints the size Rucio
holds for a file (-1: unknown). The user account's password comes in
``RUCIO_USER_PASSWORD``, never on the command line.

Rucio is imported inside the functions: this module is also imported, for its
fixture data, where the ``rucio`` module is rucio-clients, not the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

USERNAME = "alice"
ACCOUNT = "alice"
DESTINATION_RSE = "SITE_DISK"

# Rucio storage elements, each with a posix `file` protocol under the server's folder.
RSES = {"SITE_DISK": {}, "SITE_TAPE": {"rse_type": "TAPE"}, "SITE_SCRATCHDISK": {}}
SCOPES = {"user.alice": ACCOUNT, "data18": "root", "mc16": "root"}
# Files (name: bytes) of scope data18, with the RSE their replica is on.
FILES = {
    "file1.root": (1000, "SITE_DISK"),
    "file2.root": (2000, "SITE_DISK"),
    "file3.root": (3000, "SITE_DISK"),
    "raw1.root": (4000, "SITE_TAPE"),
    "raw2.root": (5000, "SITE_TAPE"),
    "sim1.root": (6000, "SITE_TAPE"),
}
# Datasets of data18 and the files they hold; AOD.container holds AOD.dataset.
DATASETS = {
    "AOD.dataset": ["file1.root", "file2.root"],
    "legacy.dataset": ["file3.root"],
    "RAW.dataset": ["raw1.root", "raw2.root"],
    "SIM.dataset": ["sim1.root"],
}
CONTAINERS = {"AOD.container": ["AOD.dataset"]}
# Rules that exist from the start: AOD.dataset kept on the destination RSE (already there: OK).
RULES = [("AOD.dataset", DESTINATION_RSE)]


def protocol(prefix: str) -> dict[str, Any]:
    return {
        "scheme": "file",
        "hostname": "localhost",
        "port": 0,
        "prefix": prefix,
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {
            "lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {"read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1, "third_party_copy_write": 1},
        },
    }


def database() -> None:
    from rucio.db.sqla.session import get_engine
    from rucio.db.sqla.util import build_database, create_base_vo, create_root_account

    # SQLite's write-ahead log lets the server's threads read while one writes (concurrent uploads).
    with get_engine().connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    build_database()
    create_base_vo()
    create_root_account()
    get_engine().dispose()  # no connection of this process stays open beside the server's


def seed(storage: str) -> None:
    """The fixture data; RSE storage folders go under ``storage``."""
    from rucio.client import Client

    client = Client()
    client.add_account(ACCOUNT, "USER", "alice@example.org")
    client.add_identity(ACCOUNT, USERNAME, "USERPASS", "alice@example.org",
                        password=os.environ["RUCIO_USER_PASSWORD"])
    # Rucio's generic permission policy lets only admins mark replicas available, the last step of an upload.
    client.add_account_attribute(ACCOUNT, "admin", "True")
    for rse, properties in RSES.items():
        client.add_rse(rse, **properties)
        client.add_protocol(rse, protocol(os.path.join(storage, rse) + "/"))
        for account in ("root", ACCOUNT):
            client.set_local_account_limit(account, rse, 10**12)
    for scope, account in SCOPES.items():
        client.add_scope(account, scope)
    for rse in RSES:
        files = [{"scope": "data18", "name": name, "bytes": size, "adler32": "0cc737eb"}
                 for name, (size, where) in FILES.items() if where == rse]
        if files:
            client.add_replicas(rse, files)
    for dataset, names in DATASETS.items():
        client.add_dataset("data18", dataset)
        client.attach_dids("data18", dataset, [{"scope": "data18", "name": name} for name in names])
    for container, datasets in CONTAINERS.items():
        client.add_container("data18", container)
        client.attach_dids("data18", container, [{"scope": "data18", "name": name} for name in datasets])
    for dataset, rse in RULES:
        client.add_replication_rule([{"scope": "data18", "name": dataset}], 1, rse)


def finish_transfer(rse: str, *dids: str) -> None:
    from rucio.client import Client

    files = [{"scope": did.split(":")[0], "name": did.split(":")[1], "state": "A"} for did in dids]
    Client().update_replicas_states(rse, files)


def fail_transfer(rse: str, *dids: str) -> None:
    from rucio.client import Client

    files = [{"scope": did.split(":")[0], "name": did.split(":")[1], "state": "U"} for did in dids]
    Client().update_replicas_states(rse, files)


def add_file(rse: str, did: str, size: str, adler32: str, md5: str) -> None:
    from rucio.client import Client

    scope, name = did.split(":")
    Client().add_replicas(rse, [{"scope": scope, "name": name, "bytes": int(size), "adler32": adler32, "md5": md5}])


def did_bytes(did: str) -> None:
    """Print the size Rucio holds for file ``did``, or -1 when Rucio does not know it."""
    from rucio.client import Client
    from rucio.common.exception import DataIdentifierNotFound

    scope, name = did.split(":")
    try:
        print(Client().get_metadata(scope, name)["bytes"])
    except DataIdentifierNotFound:
        print(-1)


def set_limit(rse: str, size: str) -> None:
    from rucio.client import Client

    Client().set_local_account_limit(ACCOUNT, rse, int(size))


def set_admin(admin: str) -> None:
    from rucio.client import Client

    # Rucio ignores an admin's quotas: only a user account without the attribute is held to one.
    if admin == "yes":
        Client().add_account_attribute(ACCOUNT, "admin", "True")
    else:
        Client().delete_account_attribute(ACCOUNT, "admin")


STEPS: dict[str, Callable[..., None]] = {
    "database": database, "seed": seed, "finish-transfer": finish_transfer, "fail-transfer": fail_transfer,
    "add-file": add_file, "did-bytes": did_bytes, "set-limit": set_limit, "set-admin": set_admin,
}


def serve_steps() -> None:
    """Run the steps standard input asks for, a JSON list (``["add-file", RSE, ...]``) a line, until it ends.

    Each step's answer is one JSON line on standard output: ``{"printed": ...}``, what the step printed,
    or ``{"failed": traceback}``. Anything else printed, Rucio's warnings included, goes to standard error.
    """
    answers, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        command, *args = json.loads(line)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                STEPS[command](*args)
        except Exception:
            failure = traceback.format_exc()
            sys.stderr.write(failure)
            sys.stderr.flush()
            answer = {"failed": failure}
        else:
            answer = {"printed": printed.getvalue()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve_steps()
