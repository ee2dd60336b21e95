import pytest
import torch

from volgan.networks import PatchDiscriminator, SNUNetGenerator, conv_modules, has_spectral_norm


@pytest.mark.parametrize("dims,shape", [(3, (16, 16, 16)), (3, (17, 24, 20)), (2, (32, 32)), (2, (33, 40))])
def test_generator_shapes_and_range(dims, shape):
    g = SNUNetGenerator(spatial_dims=dims, in_channels=5, out_channels=2, channels=(4, 8, 16, 32))
    y = g(torch.randn(2, 5, *shape))
    assert y.shape == (2, 2, *shape)
    assert float(y.abs().max()) <= 1.0  # tanh output


def test_generator_architecture_follows_paper():
    g = SNUNetGenerator()  # paper defaults: 3 down, 3 up, 16 channels first, doubling
    assert g.channels == (16, 32, 64, 128)
    assert len(g.down_blocks) == 3 and len(g.up_blocks) == 3
    convs = conv_modules(g)
    assert convs and all(has_spectral_norm(c) for c in convs)
    assert not any(isinstance(c, torch.nn.modules.conv._ConvTransposeNd) for c in convs)
    assert all(c.stride == (1, 1, 1) for c in convs)
    kernels = {c.kernel_size for c in convs}
    assert kernels == {(3, 3, 3), (1, 1, 1)}
    assert sum(isinstance(m, torch.nn.InstanceNorm3d) for m in g.modules()) == len(convs) - 1
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in g.modules()) == len(convs) - 1
    assert sum(isinstance(m, torch.nn.MaxPool3d) for m in g.modules()) == 3
    assert isinstance(g.output_block[-1], torch.nn.Tanh)
    # first layer of each up block halves the channels before the skip concatenation
    for up, c in zip(g.up_samplers, (128, 64, 32)):
        assert up.conv.conv.in_channels == c and up.conv.conv.out_channels == c // 2
        assert up.mode == "trilinear"


def test_generator_spectral_norm_switch():
    g = SNUNetGenerator(channels=(4, 8), spectral=False)
    assert not any(has_spectral_norm(c) for c in conv_modules(g))


@pytest.mark.parametrize("dims", [2, 3])
def test_discriminator_patch_map_and_spectral_norm(dims):
    d = PatchDiscriminator(spatial_dims=dims, in_channels=1, cond_channels=5, channels=(8, 16, 32))
    shape = (32,) * dims
    s = d(torch.randn(2, 1, *shape), torch.randn(2, 5, *shape))
    assert s.shape[:2] == (2, 1) and s.ndim == dims + 2
    assert all(n < 32 // 4 + 1 for n in s.shape[2:])  # two stride-2 layers: size/4, then k4 s1 convs
    convs = conv_modules(d)
    assert all(has_spectral_norm(c) for c in convs)
    assert [c.stride[0] for c in convs] == [2, 2, 1, 1]
    with pytest.raises(ValueError, match="conditional"):
        d(torch.randn(1, 1, *shape))


def test_discriminator_rejects_bad_config():
    with pytest.raises(ValueError):
        PatchDiscriminator(channels=(8, 16), strides=(2,))
    with pytest.raises(ValueError):
        SNUNetGenerator(spatial_dims=4)


@pytest.mark.parametrize("dims,shape", [(2, (64, 48)), (3, (16, 24, 16))])
def test_resnet_generator_and_cenet(dims, shape):
    from volgan.networks import CENet, ResnetGenerator

    g = ResnetGenerator(dims, 2, 1, ngf=8, n_blocks=9 if dims == 2 else 2)
    x = torch.randn(2, 2, *shape)
    assert g(x).shape == (2, 1, *shape) and float(g(x).abs().max()) <= 1
    convs = conv_modules(g)
    transposed = [c for c in convs if isinstance(c, torch.nn.modules.conv._ConvTransposeNd)]
    assert len(transposed) == 2  # "2 deconv layers"
    if dims == 2:
        assert len(convs) - len(transposed) - 2 * 9 == 4  # "4 conv layers" + 9 residual blocks of two convs
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.randn(1, 2, *(s + 1 for s in shape)))
    seg = CENet(dims, 1, 3, (8, 16, 32, 64))
    assert seg(torch.randn(2, 1, *shape)).shape == (2, 3, *shape)
