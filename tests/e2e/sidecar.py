"""A second mutating webhook that appends a sidecar, as service meshes do, for reinvocation tests."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mutator.serve.tls import self_signed

SIDECAR = "injected-sidecar"


class SidecarInjector:
    """HTTPS on loopback; appends container ``injected-sidecar`` with *image* unless present."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.calls = 0
        directory = tempfile.mkdtemp(prefix="sidecar-")
        self.cert, key = self_signed(directory, ("127.0.0.1",))
        injector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                injector.calls += 1
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps(injector.answer(review["request"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        containers = request["object"]["spec"]["containers"]
        if all(c["name"] != SIDECAR for c in containers):
            patch = [{"op": "add", "path": "/spec/containers/-",
                      "value": {"name": SIDECAR, "image": self.image}}]
            response |= {"patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def configuration(self, *, label: str) -> dict[str, Any]:
        """Sorts after ``nonroot-mutator``, so it runs after us and we are re-invoked."""
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "zz-sidecar-injector"},
            "webhooks": [{
                "name": "inject.sidecar.test",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "objectSelector": {"matchLabels": {label: "true"}},
                "clientConfig": {"url": f"{self.url}/inject",
                                 "caBundle": base64.b64encode(Path(self.cert).read_bytes()).decode()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}],
            }],
        }

    def __enter__(self) -> SidecarInjector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
