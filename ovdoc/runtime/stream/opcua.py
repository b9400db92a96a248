"""`--opcua-server 127.0.0.1:4840`: every camera's verdict as OPC UA variables, for a PLC or SCADA system.

Address space (namespace `urn:ovdoc`), endpoint opc.tcp://HOST:PORT/ovdoc:

    Objects/ovdoc
        scoring          Boolean  whether the latest frame was scored (False while paused)
        PauseScoring()   method   pause scoring (every camera: one model scores them all)
        ResumeScoring()  method
        cam<N>           object, one per camera (N = its position; DisplayName = the source's name)
            score        Double   the latest frame's score (NaN before the first)
            smoothed     Double   the smoothed score, the one compared with the threshold
            anomalous    Boolean
            threshold    Double
            episodes     UInt32   anomaly episodes started
            last_episode String   the latest anomaly_start / anomaly_end record as JSON ("" before any)

asyncua (pure Python, the `opcua` extra: pip install 'ovdoc[opcua]') serves it from a thread of its own
with its own event loop. The live loop's thread only stores the newest values and wakes that loop, which
writes them: a slow client never slows scoring, and values are coalesced, never queued.

Loopback is open to anonymous clients. Any other address needs a user and password (--opcua-user,
--opcua-password or OVDOC_OPCUA_PASSWORD; anonymous clients are then refused), or a server certificate
and key with the client certificates to trust (--opcua-cert, --opcua-key, --opcua-trust; then only the
Basic256Sha256 Sign&Encrypt endpoint exists and only trusted clients connect).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
from pathlib import Path

from ovdoc.errors import OvdocError
from ovdoc.log import get_logger
from ovdoc.runtime.stream.episodes import public
from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.output_spec import LaneContext, Output, OutputOption, OutputRun, RunContext
from ovdoc.runtime.stream.sinks import Sink
from ovdoc.runtime.stream.web import is_loopback

NAMESPACE = "urn:ovdoc"
START_TIMEOUT_S = 15.0
log = get_logger("run")


def parse_opcua(values) -> tuple[str, int]:
    """HOST:PORT -> (host, port); refuses (one line) an address off loopback without credentials."""
    text = values["opcua_server"]
    host, sep, port_text = str(text).rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text) if sep else -1
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise OvdocError(f"--opcua-server must look like 127.0.0.1:4840, got {text!r}")
    user, password = values.get("opcua_user"), values.get("opcua_password")
    if bool(user) != bool(password):
        raise OvdocError("--opcua-user and --opcua-password (or OVDOC_OPCUA_PASSWORD) go together")
    cert_files = [values.get(k) for k in ("opcua_cert", "opcua_key", "opcua_trust")]
    if any(cert_files) and not all(cert_files):
        raise OvdocError("--opcua-cert, --opcua-key and --opcua-trust go together (server certificate, its "
                         "key, the client certificates to trust)")
    for path in filter(None, cert_files):
        if not Path(path).exists():
            raise OvdocError(f"--opcua: no such file or folder: {path}")
    trust = values.get("opcua_trust")
    if trust and not any(p.suffix.lower() in (".der", ".pem") for p in Path(trust).glob("*.*")):
        raise OvdocError(f"--opcua-trust {trust} holds no client certificate (.der or .pem)")
    if not is_loopback(host) and not user and not all(cert_files):
        raise OvdocError(
            f"--opcua-server {host} is reachable from other machines: give --opcua-user and --opcua-password "
            "(or OVDOC_OPCUA_PASSWORD), or --opcua-cert/--opcua-key/--opcua-trust, or bind 127.0.0.1"
        )
    return host, port


def _need_asyncua():
    try:
        import asyncua
    except ImportError as exc:
        raise OvdocError("--opcua-server needs asyncua: pip install 'ovdoc[opcua]'") from exc
    return asyncua


class OpcUaServer(OutputRun):
    """The asyncua server thread, the values it publishes, and the camera sinks that feed them."""

    def __init__(self, values, run: RunContext) -> None:
        _need_asyncua()
        self.host, self.port = parse_opcua(values)
        self.values = values
        self.run = run
        self.cameras = len(run.names)
        self._lock = threading.Lock()
        self._pending: dict[int, dict] = {}
        self._scoring: bool | None = None
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="ovdoc-opcua", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"opc.tcp://{host}:{self.port}/ovdoc"

    # --- from the live loop's thread ---------------------------------------------------------------
    def sink(self, lane: LaneContext) -> OpcUaSink:
        return OpcUaSink(self, lane.source_id)

    def update(self, camera: int, fields: dict, scoring: bool | None = None) -> None:
        """Store the newest values; wake the server's loop unless it is already awake for them."""
        with self._lock:
            self._pending.setdefault(camera, {}).update(fields)
            if scoring is not None:
                self._scoring = scoring
            signal, self._signalled = not self._signalled, True
        if signal and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(START_TIMEOUT_S)
        if self._error is not None:
            raise OvdocError(f"--opcua-server {self.host}:{self.port}: {self._error}")
        if not self._ready.is_set():
            raise OvdocError(f"--opcua-server {self.host}:{self.port}: the OPC UA server did not start")
        log.info(f"OPC UA server on {self.url}")

    def stop(self) -> None:
        if self._loop is None or not self._thread.is_alive():
            return
        self._stopping = True
        self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(10)

    def summary(self) -> dict:
        return {"url": self.url}

    # --- the server's thread -----------------------------------------------------------------------
    def _main(self) -> None:
        for name in ("asyncua", "asyncua.server", "asyncua.common"):
            logging.getLogger(name).setLevel(logging.ERROR)  # its INFO/WARNING chatter is not ours
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(), or lost at exit
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from asyncua import Server, ua

        server = Server(user_manager=self._user_manager())
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/ovdoc")
        server.set_server_name("ovdoc")
        await self._secure(server, ua)
        ns = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(ns, "ovdoc")
        scoring = await root.add_variable(ns, "scoring", True, ua.VariantType.Boolean)
        await root.add_method(ns, "PauseScoring", self._method(Control.PAUSE), [], [])
        await root.add_method(ns, "ResumeScoring", self._method(Control.RESUME), [], [])
        nodes: list[dict] = []
        for i, name in enumerate(self.run.names):
            cam = await root.add_object(ns, f"cam{i}")
            await cam.write_attribute(ua.AttributeIds.DisplayName,
                                      ua.DataValue(ua.Variant(ua.LocalizedText(str(name)))))
            nodes.append({
                "score": await cam.add_variable(ns, "score", math.nan, ua.VariantType.Double),
                "smoothed": await cam.add_variable(ns, "smoothed", math.nan, ua.VariantType.Double),
                "anomalous": await cam.add_variable(ns, "anomalous", False, ua.VariantType.Boolean),
                "threshold": await cam.add_variable(ns, "threshold", float(self.run.threshold(i)),
                                                    ua.VariantType.Double),
                "episodes": await cam.add_variable(ns, "episodes", 0, ua.VariantType.UInt32),
                "last_episode": await cam.add_variable(ns, "last_episode", "", ua.VariantType.String),
            })
        kinds = {"score": ua.VariantType.Double, "smoothed": ua.VariantType.Double,
                 "anomalous": ua.VariantType.Boolean, "threshold": ua.VariantType.Double,
                 "episodes": ua.VariantType.UInt32, "last_episode": ua.VariantType.String}
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with server:
            if self.port == 0:  # a free port was asked for: say which one it got
                self.port = server.bserver.port
            self._ready.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                with self._lock:
                    pending, self._pending = self._pending, {}
                    state, self._signalled = self._scoring, False
                for camera, fields in pending.items():
                    for key, value in fields.items():
                        await nodes[camera][key].write_value(ua.Variant(value, kinds[key]))
                if state is not None:
                    await scoring.write_value(ua.Variant(state, ua.VariantType.Boolean))
                if self._stopping:
                    return

    def _method(self, control: Control):
        def call(parent) -> list:
            self.run.post(Command(control, by="opcua"))
            return []

        return call

    def _user_manager(self):
        expected_user, expected_password = self.values.get("opcua_user"), self.values.get("opcua_password")
        if not expected_user:
            return None

        class OneUser:
            """The one user/password given on the command line; everyone else is refused."""

            def get_user(self, iserver, username=None, password=None, certificate=None):
                from asyncua.crypto.permission_rules import User, UserRole

                if username == expected_user and password is not None and hmac.compare_digest(
                        str(password).encode(), str(expected_password).encode()):
                    return User(role=UserRole.User)
                return None

        return OneUser()

    async def _secure(self, server, ua) -> None:
        """Endpoints and identities: open on loopback; user/password; or certificates only."""
        if self.values.get("opcua_cert"):
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            await server.load_certificate(str(self.values["opcua_cert"]))
            await server.load_private_key(str(self.values["opcua_key"]))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            store = TrustStore([Path(self.values["opcua_trust"])], [])
            await store.load()
            options = CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.TIME_RANGE
            server.set_certificate_validator(CertificateValidator(options, store))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.values.get("opcua_user"):
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])


class OpcUaSink(Sink):
    """One camera's values into the shared server."""

    name = "opcua"
    needs_pixels = False

    def __init__(self, server: OpcUaServer, camera: int) -> None:
        self.server = server
        self.camera = camera
        self.episodes = 0

    def handle(self, result: Result) -> None:
        if result.score is None:
            self.server.update(self.camera, {}, scoring=False)
            return
        self.server.update(self.camera, {
            "score": float(result.score),
            "smoothed": float(result.smoothed),
            "anomalous": bool(result.anomalous),
            "threshold": float(result.threshold),
        }, scoring=True)

    def episode(self, record: dict) -> None:
        fields = {"last_episode": json.dumps(public(record), default=float)}
        if record.get("event") == "anomaly_start":
            self.episodes += 1
            fields["episodes"] = self.episodes
        self.server.update(self.camera, fields)

    def event(self, record: dict) -> None:
        if record.get("event") in ("threshold_changed", "bundle_reloaded") and "threshold" in record:
            self.server.update(self.camera, {"threshold": float(record["threshold"])})


def _check(values) -> None:
    parse_opcua(values)
    _need_asyncua()


OUTPUT = Output(
    "opcua",
    (
        OutputOption("--opcua-server", "Serve every camera's score, verdict, threshold and episodes over "
                     "OPC UA at opc.tcp://HOST:PORT/ovdoc (needs ovdoc[opcua]); another host than loopback "
                     "needs a user/password or certificates.", metavar="HOST:PORT"),
        OutputOption("--opcua-user", "The user an OPC UA client must log in as (with --opcua-password).",
                     metavar="USER"),
        OutputOption("--opcua-password", "That user's password.", metavar="PASSWORD",
                     envvar="OVDOC_OPCUA_PASSWORD"),
        OutputOption("--opcua-cert", "The OPC UA server's certificate (PEM or DER): only the encrypted "
                     "Basic256Sha256 endpoint is offered.", kind="file", metavar="FILE"),
        OutputOption("--opcua-key", "The private key of --opcua-cert (PEM).", kind="file", metavar="FILE"),
        OutputOption("--opcua-trust", "Folder of client certificates (DER) allowed to connect with "
                     "--opcua-cert.", kind="dir", metavar="DIR"),
    ),
    enabled=lambda values: bool(values.get("opcua_server")),
    check=_check,
    build=OpcUaServer,
)
