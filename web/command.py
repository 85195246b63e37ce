"""``csm serve``: run the web UI on a loopback port until Ctrl-C (or as a login service).

A running server keeps its URL, token included, in a file only its user can read
(``paths.serve_url_path``): a server the login service started printed its URL to no one, and
``csm serve --url`` is how the user gets it.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import sys
from urllib.parse import urlsplit

import click

from csm.shared import paths
from csm.shared.errors import ServeNotRunning


@click.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port; default: the web_port setting (8765). 0: any free port (the URL printed says which).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets other machines try the page (the token still guards it).")
@click.option("--open", "open_", is_flag=True, help="Open the page in the default browser.")
@click.option("--url", "url_only", is_flag=True,
              help="Print the address (with its token) of the csm serve running now, and exit; with --open, open it.")
def serve(port: int | None, host: str, open_: bool, url_only: bool) -> None:
    """Browse the archive in a web browser: status, sessions, search, usage, settings, live.

    A separate process that asks csmd over its control socket, as the other commands do. Each
    run makes a random token: the URL printed (or opened with --open) carries it once, then the
    browser keeps it in a cookie; a request without it is refused. Stop with Ctrl-C. Run at
    login with 'csm service install --web'; 'csm serve --url' prints that server's address.

    \b
    Examples:
      csm serve --open
      csm serve --port 9000
      csm serve --url --open
    """
    if url_only:
        url = running_url()
        click.echo(url)
        if open_:
            import webbrowser

            webbrowser.open(url)
        return
    import socket

    import uvicorn

    from csm.web.app import build

    if port is None:
        from csm.shared import config

        port = config.resolve().config.web_port
    if host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"csm: warning: serving on {host}: other machines can reach this port; "
                   "only the token keeps them out", err=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        taken = " (is csm serve running already? 'csm serve --url' says)" if e.errno == errno.EADDRINUSE else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}{taken}; pick another with --port")
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={token}"
    click.echo(f"csm serve: {url}", err=False)
    sys.stdout.flush()
    publish(url)
    if open_:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(build(token, host, port), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    # uvicorn stops gracefully on SIGTERM, then raises it again to the handler it found: this one makes
    # that an exit through ``finally`` (the URL file withdrawn), not a death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        withdraw(url)


def publish(url: str) -> None:
    """Write the URL where ``--url`` finds it: created 0600 under a temporary name, then renamed over."""
    path = paths.serve_url_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(url + "\n")
    os.replace(tmp, path)


def withdraw(url: str) -> None:
    """Remove the URL file, unless another server has written its own since."""
    path = paths.serve_url_path()
    try:
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()
    except OSError:
        pass


def running_url() -> str:
    """The URL of the csm serve running now; an error naming the fix when none answers there."""
    import socket

    path = paths.serve_url_path()
    fix = "start it with 'csm serve', or at every login with 'csm service install --web'"
    try:
        url = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ServeNotRunning(f"csm serve is not running (no {path}); {fix}") from None
    except OSError as e:
        raise ServeNotRunning(f"cannot read {path}: {e.strerror}") from None
    where = urlsplit(url)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 80), timeout=2.0).close()
    except OSError:
        raise ServeNotRunning(f"csm serve is not running (nothing answers at {where.netloc}, the address "
                              f"{path} names); {fix}") from None
    return url
