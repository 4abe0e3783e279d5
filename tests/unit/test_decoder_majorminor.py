import os
import sys
from pathlib import Path

import pytest

from exporter.decoders import DecoderError, Unresolved
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.majorminor import MajorMinor


def kernel_dev(major: int, minor: int) -> bytes:
    """The kernel's MKDEV(): 12 bits of major above 20 bits of minor, in a 4-byte dev_t."""
    return (major << 20 | minor).to_bytes(4, sys.byteorder)


def user_dev(major: int, minor: int, size: int = 8) -> bytes:
    """stat(2)'s st_dev, as glibc's makedev() (Python's os.makedev) encodes it."""
    return os.makedev(major, minor).to_bytes(size, sys.byteorder)


@pytest.mark.parametrize(
    ("major", "minor"), [(0, 0), (8, 0), (8, 17), (254, 1), (259, 65536), (4095, 0xFFFFF)]
)
def test_kernel_encoding_of_4_bytes(major: int, minor: int) -> None:
    assert MajorMinor({}, 4).decode(kernel_dev(major, minor)) == f"{major}:{minor}".encode()


@pytest.mark.parametrize(
    ("major", "minor"),
    [(0, 0), (0, 45), (8, 0), (254, 1), (259, 65536), (4095, 0xFFFFF), (2**31 - 1, 2**31 - 1)],
)
def test_user_encoding_of_8_bytes(major: int, minor: int) -> None:
    assert MajorMinor({}, 8).decode(user_dev(major, minor)) == f"{major}:{minor}".encode()


def test_user_encoding_is_what_stat_gives() -> None:
    st_dev = os.stat("/").st_dev
    expected = f"{os.major(st_dev)}:{os.minor(st_dev)}".encode()
    assert MajorMinor({}, 8).decode(st_dev.to_bytes(8, sys.byteorder)) == expected


def test_encoding_overrides_the_width() -> None:
    widened = (8 << 20 | 17).to_bytes(8, sys.byteorder)  # a kernel dev_t in a u64 key
    assert MajorMinor({"encoding": "kernel"}, 8).decode(widened) == b"8:17"
    assert MajorMinor({}, 8).decode(widened) == b"0:2065"  # read as a user dev_t
    assert MajorMinor({"encoding": "user"}, 4).decode(user_dev(8, 17, 4)) == b"8:17"


def fake_sysfs(root: Path, devices: dict[str, str]) -> None:
    for number, uevent in devices.items():
        device = root / "dev" / "block" / number
        device.mkdir(parents=True)
        (device / "uevent").write_text(uevent)


def test_device_name_from_sysfs(tmp_path: Path) -> None:
    fake_sysfs(
        tmp_path,
        {
            "254:0": "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=9\n",
            "259:1": "MAJOR=259\nMINOR=1\nDEVNAME=nvme0n1p1\nDEVTYPE=partition\n",
            "7:0": "MAJOR=7\nMINOR=0\n",  # no DEVNAME
        },
    )
    decoder = MajorMinor({"device_name": True, "sysfs": str(tmp_path)}, 4)
    assert decoder.decode(kernel_dev(254, 0)) == b"vda"
    assert decoder.decode(kernel_dev(259, 1)) == b"nvme0n1p1"
    assert decoder.decode(kernel_dev(7, 0)) == b"7:0"
    assert decoder.decode(kernel_dev(0, 45)) == b"0:45"  # tmpfs, overlayfs: no block device
    user = MajorMinor({"device_name": True, "sysfs": str(tmp_path)}, 8)
    assert user.decode(user_dev(259, 1)) == b"nvme0n1p1"


def test_numbers_without_device_name(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, {"254:0": "DEVNAME=vda\n"})
    decoder = MajorMinor({"device_name": False, "sysfs": str(tmp_path)}, 4)
    assert decoder.decode(kernel_dev(254, 0)) == b"254:0"


@pytest.mark.parametrize("size", [1, 2, 3, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        MajorMinor({}, size)
    assert str(e.value) == f"majorminor decodes 4 or 8 bytes, not {size}"


def test_bad_options() -> None:
    with pytest.raises(DecoderError, match="'encoding' must be kernel or user, not 'huge'"):
        MajorMinor({"encoding": "huge"}, 8)
    with pytest.raises(DecoderError, match="'device_name' must be true or false, not 'yes'"):
        MajorMinor({"device_name": "yes"}, 4)


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="majorminor decodes a raw field"):
        MajorMinor({}, TEXT_INPUT)


PARTITIONS = """\
major minor  #blocks  name

   8        0   1000 sda
   8       16   1000 sdb
 254        0   1000 vda
"""


@pytest.fixture
def partitions(tmp_path: Path) -> Path:
    path = tmp_path / "partitions"
    path.write_text(PARTITIONS)
    return path


@pytest.mark.parametrize(
    ("data", "name"),
    [
        # v1.2.5's decoder/majorminor_test.go, little-endian new_encode_dev() values
        (b"\x00\x08\x00\x00", b"sda"),
        (b"\x10\x08\x00\x00", b"sdb"),
        (user_dev(254, 0, 4), b"vda"),
        (user_dev(254, 0, 4) + b"\xff\xff\xff\xff", b"vda"),  # v1 read the first 4 bytes
    ],
)
def test_v1_names_devices_by_proc_partitions(partitions: Path, data: bytes, name: bytes) -> None:
    decoder = MajorMinor({"v1": True, "partitions": str(partitions)}, len(data))
    assert decoder.decode(data) == name


def test_v1_unknown_devices_are_asked_again(partitions: Path) -> None:
    decoder = MajorMinor({"v1": True, "partitions": str(partitions)}, 4)
    with pytest.raises(Unresolved) as unresolved:
        decoder.decode(b"\x10\x88\x00\x00")
    assert unresolved.value.value == b"unknown:136:16"  # as in v1's test
    partitions.write_text(PARTITIONS + " 136       16   1000 sdz\n")  # attached since
    assert decoder.decode(b"\x10\x88\x00\x00") == b"sdz"


def test_v1_takes_no_native_options(partitions: Path) -> None:
    with pytest.raises(DecoderError, match="v1 takes neither 'encoding' nor 'device_name'"):
        MajorMinor({"v1": True, "device_name": True}, 4)
    with pytest.raises(DecoderError, match="4 bytes or more, not 2"):
        MajorMinor({"v1": True}, 2)
