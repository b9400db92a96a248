"""Device names are checked against what OpenVINO reports, with one clear line when unusable."""

from __future__ import annotations

import pytest

from ovdoc.errors import OvdocError
from ovdoc.runtime.devices import check_device, describe_devices


def test_cpu_is_accepted_in_any_case():
    assert check_device("cpu") == "CPU"
    assert check_device("CPU") == "CPU"


def test_auto_with_present_members_is_accepted():
    assert check_device("AUTO") == "AUTO"
    assert check_device("AUTO:CPU") == "AUTO:CPU"


@pytest.mark.parametrize("device", ["MYRIAD", "HDDL", "myriad"])
def test_removed_plugins_say_when_they_left(device):
    with pytest.raises(OvdocError, match="left OpenVINO in 2023.0"):
        check_device(device)


def test_unknown_device_lists_what_is_present():
    with pytest.raises(OvdocError, match="devices present: .*CPU"):
        check_device("TPU")


def test_absent_gpu_points_to_the_driver():
    if any(d["name"].startswith("GPU") for d in describe_devices()):
        pytest.skip("this machine has a GPU device")
    with pytest.raises(OvdocError, match="compute runtime"):
        check_device("GPU")


def test_virtual_device_with_absent_member_is_refused():
    if any(d["name"].startswith("NPU") for d in describe_devices()):
        pytest.skip("this machine has an NPU")
    with pytest.raises(OvdocError, match="NPU"):
        check_device("AUTO:NPU,CPU")
