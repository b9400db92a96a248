"""`ovdoc run --opcua-server`: a real asyncua client reads each camera's values while the shipped demo clip
runs through `ovdoc run`, and pauses scoring through the server's method; the address and credential
rules, and the missing-package line."""

from __future__ import annotations

import asyncio
import json
import math
import sys

import pytest
from _cli import error_line, free_port, invoke, ovdoc_cli, start_ovdoc, stop_ovdoc
from conftest import need_package

from ovdoc.errors import OvdocError

STARTUP_S = 90.0  # the model compiles first; a shared 2-core box is slow
CHANGE_S = 60.0


@pytest.fixture()
def asyncua():
    return need_package("asyncua", "the OPC UA output (pip install 'ovdoc[opcua]')")


async def until(check, timeout: float, what: str):
    """Await `check()` until it returns something true, bounded (a real condition, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def connect(url: str, user: str | None = None, password: str | None = None):
    from asyncua import Client

    client = Client(url, timeout=5)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    await client.connect()
    return client


def events_of(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def live_checks(url: str, events_file) -> dict:
    """Read the demo camera's values as they change; pause and resume scoring by the method."""
    from asyncua import ua

    client = await until(lambda: connect(url), STARTUP_S, "the OPC UA server")
    try:
        ns = await client.get_namespace_index("urn:ovdoc")
        root = await client.nodes.objects.get_child(f"{ns}:ovdoc")
        cam = await root.get_child(f"{ns}:cam0")
        node = {name: await cam.get_child(f"{ns}:{name}")
                for name in ("score", "smoothed", "anomalous", "threshold", "episodes", "last_episode")}
        scoring = await root.get_child(f"{ns}:scoring")
        assert "stream" in (await cam.read_display_name()).Text  # the source's name

        async def scored():
            value = await node["score"].read_value()
            return value if not math.isnan(value) else None

        first = await until(scored, STARTUP_S, "a first score")
        # the value is a frame's real score: the events file (written before the OPC UA update) has it
        assert any(abs(e.get("score", math.nan) - first) < 1e-4 for e in events_of(events_file))
        await until(lambda: _changed(node["score"], first), CHANGE_S, "the score to change as frames go by")

        # an anomalous product in the clip: an episode starts, the verdict flips, the record is there
        async def an_episode():
            return await node["episodes"].read_value() >= 1

        await until(an_episode, CHANGE_S, "an anomaly episode")
        last = json.loads(await node["last_episode"].read_value())
        assert last["event"] in ("anomaly_start", "anomaly_end") and last["episode"] >= 1
        starts = [e for e in events_of(events_file) if e.get("event") == "anomaly_start"]
        assert any(e["episode"] == last["episode"] and e["frame"] == last["frame"] for e in starts) or \
            last["event"] == "anomaly_end"
        threshold = await node["threshold"].read_value()
        assert threshold > 0 and await node["anomalous"].read_value() in (True, False)
        assert (await node["score"].read_data_value()).Value.VariantType == ua.VariantType.Double

        # pause scoring through the method: the loop's next frames come unscored; then resume
        await root.call_method(f"{ns}:PauseScoring")

        async def paused():
            return await scoring.read_value() is False

        await until(paused, CHANGE_S, "scoring to pause")

        async def resumed():
            return await scoring.read_value() is True

        await root.call_method(f"{ns}:ResumeScoring")
        await until(resumed, CHANGE_S, "scoring to resume")
        return {"threshold": threshold}
    finally:
        await client.disconnect()


async def _changed(node, before: float) -> bool:
    return await node.read_value() != before


@pytest.mark.slow
def test_a_client_reads_the_demo_cameras_values_and_pauses_scoring(asyncua, tmp_path):
    port = free_port()
    events = tmp_path / "events.jsonl"
    proc = start_ovdoc("run", "--headless", "--json", "--loop", "--realtime", "--duration", "300",
                       "--events", str(events), "--opcua-server", f"127.0.0.1:{port}")
    try:
        seen = asyncio.run(live_checks(f"opc.tcp://127.0.0.1:{port}/ovdoc", events))
    finally:
        summary, err = stop_ovdoc(proc)
    assert summary["outputs"]["opcua"]["url"] == f"opc.tcp://127.0.0.1:{port}/ovdoc"
    assert summary["threshold"] == pytest.approx(seen["threshold"])
    assert summary["skipped"] > 0  # frames that came while paused were not scored
    assert summary["episodes"] >= 1 and "Traceback" not in err


@pytest.mark.slow
def test_user_and_password_are_enforced(asyncua, tmp_path):
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/ovdoc"
    proc = start_ovdoc("run", "--headless", "--json", "--loop", "--duration", "300",
                       "--opcua-server", f"127.0.0.1:{port}", "--opcua-user", "plc",
                       "--opcua-password", "s3cret")
    try:
        async def checks() -> None:
            client = await until(lambda: connect(url, "plc", "s3cret"), STARTUP_S, "the OPC UA server")
            try:
                ns = await client.get_namespace_index("urn:ovdoc")
                assert await client.nodes.objects.get_child(f"{ns}:ovdoc")
            finally:
                await client.disconnect()
            from asyncua import ua

            refusals = ((None, None, ua.uaerrors.BadIdentityTokenRejected),  # anonymous: not offered
                        ("plc", "wrong", ua.uaerrors.BadUserAccessDenied),
                        ("someone", "s3cret", ua.uaerrors.BadUserAccessDenied))
            for user, password, refused in refusals:
                with pytest.raises(refused):
                    client = await connect(url, user, password)
                    await client.disconnect()

        asyncio.run(checks())
    finally:
        stop_ovdoc(proc)


async def make_certificate(folder, name: str, use) -> tuple:
    """A self-signed application certificate (DER) and its key (PEM), as an OPC UA deployment has."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}-key.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(key, cert, f"urn:ovdoc-test:{name}", "localhost", [use],
                                        {"commonName": name})
    return cert, key


@pytest.mark.slow
def test_certificates_only_trusted_clients_connect(asyncua, tmp_path):
    from asyncua import ua
    from cryptography.x509.oid import ExtendedKeyUsageOID

    async def certificates():
        server = await make_certificate(tmp_path / "server", "server", ExtendedKeyUsageOID.SERVER_AUTH)
        trusted = await make_certificate(tmp_path / "trusted", "plc", ExtendedKeyUsageOID.CLIENT_AUTH)
        stranger = await make_certificate(tmp_path / "stranger", "stranger", ExtendedKeyUsageOID.CLIENT_AUTH)
        return server, trusted, stranger

    (server_cert, server_key), (plc_cert, plc_key), (other_cert, other_key) = asyncio.run(certificates())
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / plc_cert.name).write_bytes(plc_cert.read_bytes())
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/ovdoc"
    proc = start_ovdoc("run", "--headless", "--json", "--loop", "--duration", "300",
                       "--opcua-server", f"127.0.0.1:{port}", "--opcua-cert", str(server_cert),
                       "--opcua-key", str(server_key), "--opcua-trust", str(trust))

    async def secure_client(cert, key):
        from asyncua import Client
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        client = Client(url, timeout=5)
        await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key))
        await client.connect()
        return client

    try:
        async def checks() -> None:
            client = await until(lambda: secure_client(plc_cert, plc_key), STARTUP_S, "a trusted client in")
            try:
                ns = await client.get_namespace_index("urn:ovdoc")
                cam = await client.nodes.objects.get_child([f"{ns}:ovdoc", f"{ns}:cam0"])
                assert await (await cam.get_child(f"{ns}:threshold")).read_value() > 0
            finally:
                await client.disconnect()
            with pytest.raises(ua.uaerrors.BadCertificateUntrusted):  # a certificate not in the trust folder
                client = await secure_client(other_cert, other_key)
                await client.disconnect()
            with pytest.raises(ua.UaError, match="No matching endpoints"):  # no security: no such endpoint
                client = await connect(url)
                await client.disconnect()

        asyncio.run(checks())
    finally:
        stop_ovdoc(proc)
    # the same files make another address acceptable
    from ovdoc.runtime.stream.opcua import parse_opcua

    values = {"opcua_server": "0.0.0.0:4840", "opcua_cert": str(server_cert), "opcua_key": str(server_key),
              "opcua_trust": str(trust)}
    assert parse_opcua(values) == ("0.0.0.0", 4840)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--opcua-server", "0.0.0.0:4840"], "reachable from other machines"),
        (["--opcua-server", "127.0.0.1"], "must look like 127.0.0.1:4840"),
        (["--opcua-server", "127.0.0.1:4840", "--opcua-user", "plc"], "go together"),
        (["--opcua-server", "0.0.0.0:4840", "--opcua-cert", "nope.pem"], "go together"),
        (["--opcua-server", "0.0.0.0:4840", "--opcua-cert", "{tmp}/c.der", "--opcua-key", "{tmp}/k.pem",
          "--opcua-trust", "{tmp}"], "holds no client certificate"),
    ],
)
def test_bad_opcua_options_are_one_line(args, says, tmp_path):
    for name in ("c.der", "k.pem"):
        (tmp_path / name).write_bytes(b"not read: the empty trust folder is refused first")
    args = [arg.replace("{tmp}/", f"{tmp_path}/").replace("{tmp}", str(tmp_path / "empty")) for arg in args]
    (tmp_path / "empty").mkdir()
    proc = ovdoc_cli("run", "--headless", *args, timeout=60)
    assert proc.returncode != 0
    assert says in error_line(proc)


def test_missing_asyncua_is_one_clear_line(monkeypatch):
    from ovdoc.runtime.stream import output_registry

    monkeypatch.setitem(sys.modules, "asyncua", None)  # as if not installed
    with pytest.raises(OvdocError, match=r"pip install 'ovdoc\[opcua\]'"):
        output_registry.check(output_registry.resolve({"opcua_server": "127.0.0.1:4840"}))


def test_the_options_come_from_the_registry():
    """`ovdoc run --help` lists every registered output's options, the new OPC UA ones included."""
    from ovdoc.runtime.stream.output_registry import options

    result = invoke("run", "--help")
    assert result.exit_code == 0, result.output
    for option in options():
        assert option.flag in result.output
