"""fedmq_client.torch_utils (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fedmq_client import torch_utils as tu  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)


def test_state_dict_to_numpy_skips_integer_buffers():
    net = Net()
    params, skipped = tu.state_dict_to_numpy(net)
    assert skipped == ["bn.num_batches_tracked"]
    assert list(params) == ["fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
                            "bn.running_var"]
    assert all(a.dtype == np.float32 and a.flags["C_CONTIGUOUS"] for a in params.values())
    params["fc.bias"][0] = 123.0  # a copy
    assert net.fc.bias[0].item() != 123.0


def test_load_params_and_delta():
    a, b = Net(), Net()
    pa, _ = tu.state_dict_to_numpy(a)
    pb, _ = tu.state_dict_to_numpy(b)
    tu.load_params(b, pa)
    np.testing.assert_array_equal(tu.state_dict_to_numpy(b)[0]["fc.weight"], pa["fc.weight"])
    d = tu.delta(pb, pa)
    back = tu.apply_delta(pa, d)
    np.testing.assert_allclose(back["fc.weight"], pb["fc.weight"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="missing"):
        tu.load_params(b, {"fc.weight": pa["fc.weight"]})
    assert "fc.bias" in tu.load_params(b, {"fc.weight": pa["fc.weight"]}, strict=False)
    with pytest.raises(ValueError, match="shape"):
        tu.load_params(b, dict(pa, **{"fc.bias": np.zeros(4, np.float32)}))
