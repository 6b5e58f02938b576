"""A small Generator / Discriminator of stylegan2-pytorch's architecture (StyledConv, ToRGB with upsampling, Blur,
EqualLinear with the fused activation, ResBlock D), written for the tests on the stand-in ``op``, and the train
step of its train.py: D loss + R1 (under ``no_weight_gradients``), G loss + path-length penalty."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from .op import FusedLeakyReLU, conv2d_gradfix, fused_leaky_relu, upfirdn2d


def make_kernel(k):
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class Upsample(nn.Module):
    def __init__(self, kernel, factor=2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, input):
        return upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, input):
        return upfirdn2d(input, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, input):
        return conv2d_gradfix.conv2d(input, self.weight * self.scale, bias=self.bias, stride=self.stride,
                                     padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.activation = activation
        self.scale, self.lr_mul = 1 / math.sqrt(in_dim) * lr_mul, lr_mul

    def forward(self, input):
        if self.activation:
            return fused_leaky_relu(F.linear(input, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_channel, out_channel
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            p = len(blur_kernel) - 2 - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, input, style):
        batch, in_channel, height, width = input.shape
        style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, self.out_channel, 1, 1, 1)
        weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
        input = input.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                    self.kernel_size)
            out = conv2d_gradfix.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.view(batch, self.out_channel, out.shape[2], out.shape[3]))
        else:
            out = conv2d_gradfix.conv2d(input, weight, padding=self.padding, groups=batch)
            out = out.view(batch, self.out_channel, height, width)
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise):
        return image + self.weight * noise


class StyledConv(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, input, style, noise):
        return self.activate(self.noise(self.conv(input, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, input, style, skip=None):
        out = self.conv(input, style) + self.bias
        return out + self.upsample(skip) if skip is not None else out


class Generator(nn.Module):
    def __init__(self, size, style_dim=32, n_mlp=2, channels=16):
        super().__init__()
        self.style_dim = style_dim
        self.style = nn.Sequential(*[EqualLinear(style_dim, style_dim, lr_mul=0.01, activation="fused_lrelu")
                                     for _ in range(n_mlp)])
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.conv1 = StyledConv(channels, channels, 3, style_dim)
        self.to_rgb1 = ToRGB(channels, style_dim, upsample=False)
        self.log_size = int(math.log2(size))
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for _ in range(3, self.log_size + 1):
            self.convs.append(StyledConv(channels, channels, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(channels, channels, 3, style_dim))
            self.to_rgbs.append(ToRGB(channels, style_dim))
        for i in range(1 + 2 * (self.log_size - 2)):
            res = 2 ** (2 + (i + 1) // 2)
            self.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        self.n_latent = self.log_size * 2 - 2

    def forward(self, z):
        """(images, latents): the latents w repeated per layer, the path-length penalty's input."""
        latent = self.style(z).unsqueeze(1).repeat(1, self.n_latent, 1)
        noise = [getattr(self, f"noise_{i}") for i in range(1 + 2 * (self.log_size - 2))]
        out = self.conv1(self.input.repeat(z.shape[0], 1, 1, 1), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            out = conv2(conv1(out, latent[:, i], noise[i]), latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, latent


class ConvLayer(nn.Sequential):
    def __init__(self, in_channel, out_channel, kernel_size, downsample=False, bias=True, activate=True,
                 blur_kernel=(1, 3, 3, 1)):
        layers = []
        if downsample:
            p = len(blur_kernel) - 2 + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=0 if downsample else kernel_size // 2,
                                  stride=2 if downsample else 1, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channel, out_channel):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False)

    def forward(self, input):
        return (self.conv2(self.conv1(input)) + self.skip(input)) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, size, channels=16):
        super().__init__()
        blocks = [ConvLayer(3, channels, 1)] + [ResBlock(channels, channels) for _ in range(int(math.log2(size)) - 2)]
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = 2
        self.final_conv = ConvLayer(channels + 1, channels, 3)
        self.final_linear = nn.Sequential(EqualLinear(channels * 4 * 4, channels, activation="fused_lrelu"),
                                          EqualLinear(channels, 1))

    def forward(self, input):
        out = self.convs(input)
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        stddev = out.view(group, -1, 1, channel, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        out = torch.cat([out, stddev.repeat(group, 1, height, width)], 1)
        return self.final_linear(self.final_conv(out).view(batch, -1))


def d_r1_loss(real_pred, real_img):
    with conv2d_gradfix.no_weight_gradients():
        (grad_real,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()


def g_path_regularize(fake_img, latents, mean_path_length, decay=0.01):
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    return (path_lengths - path_mean).pow(2).mean(), path_mean.detach()


def train_step(generator, discriminator, real_img, z, r1=10.0, path_regularize=2.0):
    """One step of both networks, every loss at once (as with d_reg_every = g_reg_every = 1): D loss + R1, then
    G loss + path length. Returns the losses, the images and logits, and every parameter's gradient (None kept)."""
    fake_img, _ = generator(z)
    fake_pred, real_pred = discriminator(fake_img.detach()), discriminator(real_img)
    d_loss = F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()
    discriminator.zero_grad(set_to_none=True)
    d_loss.backward()
    real = real_img.detach().requires_grad_(True)
    r1_loss = d_r1_loss(discriminator(real), real)
    (r1 / 2 * r1_loss).backward()
    d_grads = [p.grad for p in discriminator.parameters()]

    generator.zero_grad(set_to_none=True)
    fake_img, latents = generator(z)
    fake_pred = discriminator(fake_img)
    g_loss = F.softplus(-fake_pred).mean()
    g_loss.backward()
    path_img, path_latents = generator(z[: max(1, z.shape[0] // 2)])
    path_loss, _ = g_path_regularize(path_img, path_latents, torch.zeros(()))
    (path_regularize * path_loss).backward()
    g_grads = [p.grad for p in generator.parameters()]
    return {"losses": torch.stack([d_loss, r1_loss, g_loss, path_loss]).detach(), "images": fake_img.detach(),
            "logits": torch.cat([fake_pred, real_pred]).detach(), "d_grads": d_grads, "g_grads": g_grads}
