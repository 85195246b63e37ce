"""``csm serve``: run the web UI on a loopback port until Ctrl-C (or as a login service)."""

from __future__ import annotations

import secrets
import sys

import click


@click.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0: any free port; the URL printed says which).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets other machines try the page (the token still guards it).")
@click.option("--open", "open_", is_flag=True, help="Open the page in the default browser.")
def serve(port: int, host: str, open_: bool) -> None:
    """Browse the archive in a web browser: status, sessions, search, usage, settings, live.

    A separate process that asks csmd over its control socket, as the other commands do. Each
    run makes a random token: the URL printed (or opened with --open) carries it once, then the
    browser keeps it in a cookie; a request without it is refused. Stop with Ctrl-C.

    \b
    Examples:
      csm serve --open
      csm serve --port 9000
    """
    import socket

    import uvicorn

    from csm.web.app import build

    if host not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"csm: warning: serving on {host}: other machines can reach this port; "
                   "only the token keeps them out", err=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}; pick another with --port")
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={token}"
    click.echo(f"csm serve: {url}", err=False)
    sys.stdout.flush()
    if open_:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(build(token, host, port), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
