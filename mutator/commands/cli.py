"""``mutator serve | review | report | resolve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import traceback
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from mutator import __version__, logs
from mutator import config as config_module
from mutator.commands import report, review_command
from mutator.config import Config, Platform
from mutator.decide.images import ImageUser
from mutator.errors import BadInput, ConfigError
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.local import open_all
from mutator.resolve.resolver import Resolver
from mutator.resolve.standalone import with_resolver
from mutator.serve import server, tls
from mutator.serve.certreload import CertReloader

T = TypeVar("T")
DOCKER_CONFIG_HELP = ("Docker config.json with registry credentials "
                      "(default: the config file's docker_config, else $DOCKER_CONFIG/config.json)")
# Exit codes, documented in --help and the README. 2 is also argparse's own code for a usage error.
EXIT_OK = 0  # allowed / all images resolved / served until SIGTERM
EXIT_REFUSED = 1  # review: something would be refused; resolve: an image did not resolve
EXIT_BAD_INPUT = 2  # bad flags, config, certificate files or input document
EXIT_CANNOT_SERVE = 3  # serve: the address cannot be listened on (in use, not ours, no permission)
EXIT_INTERNAL = 70  # a bug: one line on stderr, the traceback with -v (sysexits' EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = """\
exit codes:
  0   allowed, resolved, or served until SIGTERM
  1   review: something would be refused; report: something runs as root;
      resolve: an image did not resolve
  2   bad flags, configuration, certificate files or input; report: the cluster cannot be read
  3   serve: cannot listen on the address (in use, not local, no permission)
  70  internal error (one line; -v prints the traceback)
  130 interrupted"""

# What each subcommand can return, for its own --help.
COMMAND_EXIT_CODES = {
    "serve": ("  0   served until SIGTERM\n"
              "  2   bad flags, configuration or certificate files\n"
              "  3   cannot listen on the address (in use, not local, no permission)"),
    "review": ("  0   all fine (or --mode warn/audit)\n"
               "  1   something would be refused\n"
               "  2   bad flags, configuration or input"),
    "report": ("  0   nothing runs as root\n"
               "  1   something runs as root\n"
               "  2   bad flags or configuration, or the cluster cannot be read"),
    "resolve": ("  0   every image resolved\n"
                "  1   an image did not resolve\n"
                "  2   bad flags, configuration or image source"),
}
COMMON_EXIT_CODES = ("  70  internal error (one line; -v prints the traceback)\n"
                     "  130 interrupted (Ctrl-C; serve drains first)")
VERBOSE_HELP = "debug logging, and the traceback of an internal error"

TRY_IT = """\
TLS certificate (self-signed, trust it as the CA): {cert}
try it:
  curl --cacert {cert} -H 'Content-Type: application/json' \\
       --data-binary @examples/review-named-user.json '{{url}}/mutate/enforce?timeout=10s'
  curl --cacert {cert} {{url}}/healthz    # and /readyz, /metrics"""


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except ConfigError as exc:  # argparse reports only its own error types as usage errors
        raise argparse.ArgumentTypeError(str(exc)) from None


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    epilog = f"exit codes:\n{COMMAND_EXIT_CODES[name]}\n{COMMON_EXIT_CODES}"
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # -v is also taken after the subcommand; SUPPRESS keeps a -v given before it
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutator", description="Makes named-USER images run under runAsNonRoot.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = _command(commands, "serve", "run the admission webhook over HTTPS")
    serve.add_argument("--config", metavar="PATH", help="YAML config file (default: $MUTATOR_CONFIG)")
    serve.add_argument("--listen", type=_listen, metavar="HOST:PORT", help="HOST:PORT (default 0.0.0.0:8443; "
                       "127.0.0.1:8443 with --dev)")
    serve.add_argument("--tls-cert", metavar="PATH", help="PEM certificate chain")
    serve.add_argument("--tls-key", metavar="PATH", help="PEM private key")
    serve.add_argument("--kubeconfig", metavar="PATH",
                       help="read pull secrets through this kubeconfig (default: the config file's "
                       "kubeconfig, else $KUBECONFIG, else the in-cluster service account)")
    serve.add_argument("--dev", action="store_true",
                       help="make a self-signed certificate for localhost at start (removed at exit)")
    serve.add_argument("--metrics-listen", type=_listen, metavar="HOST:PORT",
                       help="also serve /metrics over plain HTTP here (no webhook TLS to scrape)")
    serve.add_argument("--log-format", choices=logs.FORMATS, default="json",
                       help="json lines (default) or text")
    serve.add_argument("--tls-reload-seconds", type=_seconds, default=5.0, metavar="S",
                       help="how often to look for a rotated certificate/key (default 5)")

    review_parser = _command(commands, "review",
                             "what the cluster would do to manifests (any kind that makes Pods) or "
                             "an AdmissionReview, offline")
    review_command.add_arguments(review_parser)
    review_parser.add_argument("--docker-config", metavar="PATH", help=DOCKER_CONFIG_HELP)

    report_parser = _command(commands, "report",
                             "every Pod (or workload) of a cluster with its user and a verdict")
    report.add_arguments(report_parser)
    report_parser.add_argument("--docker-config", metavar="PATH", help=DOCKER_CONFIG_HELP)

    resolve = _command(commands, "resolve", "print the uid/gid each image runs as")
    resolve.add_argument("--config", metavar="PATH", help="YAML config file (default: $MUTATOR_CONFIG)")
    resolve.add_argument("--platform", type=_platform, metavar="OS/ARCH[/VARIANT]",
                         help="the platform to choose from an index, e.g. linux/arm64/v8 "
                              "(default: from the config)")
    resolve.add_argument("--docker-config", metavar="PATH", help=DOCKER_CONFIG_HELP)
    resolve.add_argument("images", nargs="+", metavar="IMAGE",
                         help="a registry image (the default), or oci:DIR[:REF] (an OCI image layout) or "
                              "docker-archive:FILE[:TAG] (docker save), read offline")
    return parser


def _docker_config(args: argparse.Namespace, config: Config) -> str | None:
    """--docker-config, else the config file's docker_config, else $DOCKER_CONFIG/config.json if present."""
    if args.docker_config or config.docker_config:
        return args.docker_config or config.docker_config
    directory = os.environ.get("DOCKER_CONFIG")
    default = os.path.join(directory, "config.json") if directory else ""
    return default if default and os.path.isfile(default) else None


_LISTEN_ERRORS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL, errno.EPERM)


class _CannotServe(Exception):
    """Why serve cannot start, as one line for stderr."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def _certificate(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """The cert/key paths and the --dev hint; a --dev key lives in a directory removed on exit."""
    if args.dev:
        with tempfile.TemporaryDirectory(prefix="nonroot-mutator-") as directory:
            cert, key = tls.self_signed(directory)
            yield cert, key, TRY_IT.format(cert=cert)
        return
    if not args.tls_cert or not args.tls_key:
        raise _CannotServe("--tls-cert and --tls-key are required (or --dev)", EXIT_BAD_INPUT)
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            why = "no such file" if not os.path.exists(path) else "not a readable file"
            raise _CannotServe(f"{flag} {path}: {why}", EXIT_BAD_INPUT)
    yield args.tls_cert, args.tls_key, ""


def _serve(args: argparse.Namespace, config: Config) -> int:
    host, port = args.listen or (("127.0.0.1", 8443) if args.dev else ("0.0.0.0", 8443))
    try:
        with _certificate(args) as (cert, key, on_ready):
            try:
                context = tls.server_context(cert, key)
            except (ssl.SSLError, ValueError) as exc:
                raise _CannotServe(f"cannot load --tls-cert {cert} with --tls-key {key}: {exc}",
                                   EXIT_BAD_INPUT) from None
            if args.kubeconfig:
                config = dataclasses.replace(config, kubeconfig=args.kubeconfig)
            reloader = CertReloader(context, cert_file=cert, key_file=key)
            try:
                stopped_by = _run_fast(server.serve(
                    config, host=host, port=port, ssl_context=context, on_ready=on_ready,
                    metrics_listen=args.metrics_listen, reloader=reloader,
                    reload_interval=args.tls_reload_seconds,
                ))
            except ConfigError as exc:  # a kubeconfig that cannot be used, found as serving starts
                raise _CannotServe(str(exc), EXIT_BAD_INPUT) from None
            except OSError as exc:
                unresolved = isinstance(exc, socket.gaierror)
                if not unresolved and exc.errno not in _LISTEN_ERRORS:
                    raise
                why = (exc.strerror or str(exc)).lower()
                # a --metrics-listen failure carries its own address
                where = exc.filename if isinstance(exc.filename, str) else f"{host}:{port}"
                raise _CannotServe(f"cannot listen on {where}: {why}", EXIT_CANNOT_SERVE) from None
    except _CannotServe as exc:
        print(f"mutator serve: {exc}", file=sys.stderr)
        return exc.code
    # Ctrl-C drains like SIGTERM, and still says it was interrupted
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_OK


def _run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run the server on uvloop where it is installed: its TLS transport and scheduling take a
    good share off every warm admission. The stdlib loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _resolve(args: argparse.Namespace, config: Config) -> int:
    try:  # a layout or archive that cannot be opened is bad input, before any lookup
        local = open_all(args.images)
    except BadInput as exc:
        print(f"mutator resolve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    async def run(resolver: Resolver) -> list[Any]:
        resolver.local.update(local)
        return await asyncio.gather(
            *(resolver.lookup(image, platform=args.platform) for image in args.images)
        )

    results = asyncio.run(with_resolver(config, run, credentials=args.credentials))
    for result in results:
        print(json.dumps(result.as_json()))
    resolved = all(isinstance(r, ImageUser) and r.uid is not None for r in results)
    return EXIT_OK if resolved else EXIT_REFUSED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an exit code from ``EXIT_CODES``."""
    args = _parser().parse_args(argv)
    logs.setup(fmt=getattr(args, "log_format", "text"), verbose=args.verbose)
    try:
        try:
            config = config_module.load(args.config)
            # Credential files are read now so that a broken one is a clear error, not a traceback
            # (serve reads them again when it starts its registry session).
            docker_config = _docker_config(args, config) if args.command != "serve" else None
            args.credentials = CredentialSources.from_files(
                provider_config=config.credential_provider_config,
                provider_bin_dir=config.credential_provider_bin_dir,
                docker_config=docker_config or config.docker_config)
        except ConfigError as exc:
            print(f"mutator {args.command}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        commands = {"serve": _serve, "review": review_command.run, "report": report.run, "resolve": _resolve}
        command = commands[args.command]
        return command(args, config)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, keep the traceback for -v
        if args.verbose:
            traceback.print_exc()
        detail = " ".join(str(exc).split())[:300]
        print(f"mutator {args.command}: internal error: {type(exc).__name__}: {detail} "
              "(rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
