"""An error class carries its reply code; the client raises the class of the code csmd answered with."""

from __future__ import annotations

from csm.shared import errors
from csm.shared.errors import CsmError, DaemonError, from_code
from csm.shared.protocol import Error


def _classes(cls: type[CsmError]) -> list[type[CsmError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _classes(sub)
    return out


def test_each_code_names_one_class_and_comes_back_as_it() -> None:
    sent = [c for c in _classes(CsmError) if c.code is not None]
    codes = [c.code for c in sent]
    assert len(codes) == len(set(codes)), codes
    for cls in sent:
        reply = Error.of(cls("why"))
        assert reply.code == cls.code and reply.message == "why"
        assert from_code(reply.code) is cls
    assert {"query", "not_found", "unavailable", "config", "busy", "bad_request", "internal"} <= set(codes)


def test_an_unknown_code_is_a_daemon_error_and_an_error_without_a_code_travels_as_internal() -> None:
    assert from_code("from-a-newer-csmd") is DaemonError
    assert Error.of(errors.PathError("no folder")).code == DaemonError.code == "internal"
