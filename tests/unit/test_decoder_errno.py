import errno
import sys

import pytest

from exporter.decoders import DecoderError, build_chain
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.errno import Errno


def raw(n: int, size: int) -> bytes:
    return n.to_bytes(size, sys.byteorder, signed=True)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [-2, 2])
def test_negative_return_value_and_positive_errno_alike(size: int, n: int) -> None:
    assert Errno({}, size).decode(raw(n, size)) == b"ENOENT"


@pytest.mark.parametrize(
    ("n", "name"),
    [
        (errno.EPERM, b"EPERM"),
        (errno.EINTR, b"EINTR"),
        (errno.EAGAIN, b"EAGAIN"),  # also EWOULDBLOCK
        (errno.EACCES, b"EACCES"),
        (errno.EEXIST, b"EEXIST"),
        (errno.ENOSYS, b"ENOSYS"),
        (errno.ETIMEDOUT, b"ETIMEDOUT"),
        (errno.ECONNREFUSED, b"ECONNREFUSED"),
        (130, b"EOWNERDEAD"),
        (132, b"ERFKILL"),
    ],
)
def test_names_from_pythons_errno_table(n: int, name: bytes) -> None:
    assert Errno({}, 4).decode(raw(-n, 4)) == name


@pytest.mark.parametrize(
    ("n", "name"),
    [(35, b"EDEADLK"), (95, b"EOPNOTSUPP"), (133, b"EHWPOISON")],
)
def test_kernel_names_over_libc_aliases(n: int, name: bytes) -> None:
    assert Errno({}, 4).decode(raw(-n, 4)) == name


@pytest.mark.parametrize(
    ("n", "name"),
    [
        (512, b"ERESTARTSYS"),
        (516, b"ERESTART_RESTARTBLOCK"),
        (517, b"EPROBE_DEFER"),
        (524, b"ENOTSUPP"),
        (531, b"ENOGRACE"),
    ],
)
def test_kernel_internal_errors(n: int, name: bytes) -> None:
    assert Errno({}, 8).decode(raw(-n, 8)) == name


def test_zero_is_zero() -> None:
    assert Errno({}, 4).decode(bytes(4)) == b"0"


@pytest.mark.parametrize("n", [-520, 134, 4095, -4095, 2**31 - 1])
def test_unknown_keeps_the_number_as_given(n: int) -> None:
    assert Errno({}, 4).decode(raw(n, 4)) == f"unknown:{n}".encode()


def test_widths_are_signed() -> None:
    assert Errno({}, 1).decode(b"\xfe") == b"ENOENT"
    assert Errno({}, 2).decode(b"\xfe\xff" if sys.byteorder == "little" else b"\xff\xfe") == (
        b"ENOENT"
    )
    assert Errno({}, 8).decode(b"\xff" * 8) == b"EPERM"


@pytest.mark.parametrize(("text", "name"), [(b"-2", b"ENOENT"), (b"13", b"EACCES"), (b"0", b"0")])
def test_text_of_a_previous_decoder(text: bytes, name: bytes) -> None:
    assert Errno({}, TEXT_INPUT).decode(text) == name


def test_after_uint_a_negative_value_is_unknown() -> None:
    chain = build_chain([{"name": "uint"}, {"name": "errno"}], 4)
    assert chain.decode((2).to_bytes(4, sys.byteorder)) == "ENOENT"
    assert chain.decode(raw(-2, 4)) == "unknown:4294967294"


def test_text_that_is_no_number_fails_the_key() -> None:
    with pytest.raises(ValueError, match="errno expects an integer, not b'ENOENT'"):
        Errno({}, TEXT_INPUT).decode(b"ENOENT")


@pytest.mark.parametrize("size", [3, 5, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Errno({}, size)
    assert str(e.value) == f"errno decodes 1, 2, 4 or 8 bytes, not {size}"
