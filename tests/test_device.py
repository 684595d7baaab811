"""The one device check every ``--device`` goes through: clear one-line refusals."""

from __future__ import annotations

import pytest
import torch

from lowdose.device import check_device, pick_device
from lowdose.errors import LowdoseError


def test_cpu_and_the_default_are_accepted() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda")


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "meta"])
def test_a_string_that_is_no_usable_device_is_refused_with_the_choices(text: str) -> None:
    with pytest.raises(LowdoseError) as err:
        pick_device(text)
    message = str(err.value)
    assert message.startswith(f"--device {text}: not a device")
    assert "use cpu, cuda, cuda:N or mps" in message and "\n" not in message


def test_cuda_on_a_build_without_cuda_names_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(LowdoseError, match=r"^--device cuda: this torch build has no CUDA "
                       r"support \(torch .+\); use --device cpu or install a CUDA build$"):
        pick_device("cuda")


def test_a_gpu_index_past_the_machine_s_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(LowdoseError, match=r"^--device cuda:3: this machine has 2 CUDA GPU"):
        check_device("cuda:3")
    assert check_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LowdoseError, match="no CUDA GPU is visible"):
        check_device("cuda")
