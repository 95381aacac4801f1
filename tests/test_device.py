"""Device choice, and the model tests repeated on CUDA (marked ``gpu``:
skipped where no GPU is present, run whenever one is)."""

from __future__ import annotations

import pytest
import torch
from conftest import config_id, random_inputs, small_configs
from test_model_file import info_for

from napari_hyperfusion.io.model_file import load_model, save_model
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.devices import DeviceError, available_devices, describe_device, resolve_device
from napari_hyperfusion.nn.hyper import HyperConv3d, HyperLinear


def test_auto_picks_cuda_exactly_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("").type == expected
    assert available_devices()[-1] == "cpu"
    assert resolve_device("CPU") == torch.device("cpu")
    assert describe_device(torch.device("cpu")).startswith("CPU (")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_asking_for_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(DeviceError, match="no CUDA GPU is available.*use 'cpu' or 'auto'"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda-fast"])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(name)


@pytest.mark.gpu
@pytest.mark.parametrize("config", small_configs(), ids=config_id)
def test_every_architecture_gives_the_same_outputs_on_cuda(config):
    net = build_model(config).eval()
    image, tabular = random_inputs(config, batch=3)
    with torch.no_grad():
        cpu = net(image, tabular)
        gpu_net = net.to("cuda")
        features = gpu_net.encode_image(image.cuda())
        gpu = gpu_net.decode(features, tabular.cuda())
        torch.testing.assert_close(gpu_net(image.cuda(), tabular.cuda()), gpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["bmm", "grouped", "loop"])
def test_hyper_conv_forms_agree_on_cuda(form):
    layer = HyperConv3d(8, 12, 1, 5, stride=2, form=form)
    x, e = torch.randn(6, 8, 6, 8, 6), torch.randn(6, 5)
    cpu = layer(x, e)
    torch.testing.assert_close(layer.cuda()(x.cuda(), e.cuda()).cpu(), cpu, rtol=1e-4, atol=1e-5)
    lin = HyperLinear(20, 7, 5)
    xl = torch.randn(6, 20)
    torch.testing.assert_close(lin.cuda()(xl.cuda(), e.cuda()).cpu(), lin.cpu()(xl, e), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_a_model_file_loads_onto_cuda(tmp_path):
    config = small_configs()[0]
    net = build_model(config).eval()
    path = save_model(tmp_path / "m.safetensors", net, info_for(config))
    loaded = load_model(path, device="cuda")
    assert next(loaded.net.parameters()).is_cuda and loaded.device.type == "cuda"
    image, tabular = random_inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.net(image.cuda(), tabular.cuda()).cpu(), net(image, tabular), rtol=1e-3, atol=1e-4
        )
