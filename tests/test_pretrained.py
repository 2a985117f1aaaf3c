"""The offline EfficientNet-Lite0 ImageNet weights map one-to-one onto timm."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from cxrtriage.models import create_model
from cxrtriage.models.pretrained import load_lite0_imagenet_state_dict, map_lite0_key


def test_key_mapping_examples():
    assert map_lite0_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert map_lite0_key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert map_lite0_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert map_lite0_key("_blocks.14._bn2.bias") == "blocks.5.3.bn3.bias"
    assert map_lite0_key("_bn1.running_var") == "bn2.running_var"
    with pytest.raises(KeyError):
        map_lite0_key("_blocks.16._bn0.weight")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_strict_load_and_imagenet_sanity(name):
    """Strict load, then a real photo (scikit-image's cat 'chelsea') must come out as a cat class."""
    skdata = pytest.importorskip("skimage.data")
    model = timm.create_model(name)
    result = model.load_state_dict(load_lite0_imagenet_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    img = Image.fromarray(skdata.chelsea()).resize((224, 224))
    x = (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        top = model.eval()(x).softmax(1).topk(3).indices[0].tolist()
    assert top[0] in range(281, 286)  # ImageNet 281-285: domestic cats


def test_grayscale_stem_equals_rgb_replicated():
    """Summing the RGB stem filters is exact for a gray image replicated to 3 channels."""
    gray = create_model("efficientnet_lite0", 2, pretrained=True).eval()
    rgb = timm.create_model("efficientnet_lite0", num_classes=2).eval()
    sd = load_lite0_imagenet_state_dict()
    del sd["classifier.weight"], sd["classifier.bias"]
    rgb.load_state_dict(sd, strict=False)
    rgb.classifier.load_state_dict(gray.classifier.state_dict())
    x = torch.rand(1, 1, 96, 96) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(
            gray.forward_features(x), rgb.forward_features(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4
        )
