"""Stand-in with the interface of R3GAN's ``R3GAN/Trainer.py`` (written for ganfast's tests): ``AdversarialTraining``
with ``AccumulateGeneratorGradients`` and ``AccumulateDiscriminatorGradients``, the D step in two D passes."""
import torch
import torch.nn.functional as F


class AdversarialTraining:
    def __init__(self, Generator, Discriminator):  # noqa: N803
        self.Generator = Generator
        self.Discriminator = Discriminator

    @staticmethod
    def ZeroCenteredGradientPenalty(Samples, Critics):  # noqa: N802,N803
        """Σ over each sample of (∂ΣCritics/∂Samples)²."""
        (grad,) = torch.autograd.grad(Critics.sum(), Samples, create_graph=True)
        return grad.square().sum(dim=[1, 2, 3])

    def AccumulateGeneratorGradients(self, Noise, RealSamples, Conditions, Scale=1,  # noqa: N802,N803
                                     Preprocessor=lambda x: x):
        fakes = self.Generator(Noise, Conditions)
        fake_logits = self.Discriminator(Preprocessor(fakes), Conditions)
        real_logits = self.Discriminator(Preprocessor(RealSamples.detach()), Conditions)
        relativistic = fake_logits - real_logits
        loss = F.softplus(-relativistic)
        (Scale * loss.mean()).backward()
        return [t.detach() for t in (loss, relativistic)]

    def AccumulateDiscriminatorGradients(self, Noise, RealSamples, Conditions, Gamma, Scale=1,  # noqa: N802,N803
                                         Preprocessor=lambda x: x):
        reals = RealSamples.detach().requires_grad_(True)
        fakes = self.Generator(Noise, Conditions).detach().requires_grad_(True)
        real_logits = self.Discriminator(Preprocessor(reals), Conditions)
        fake_logits = self.Discriminator(Preprocessor(fakes), Conditions)
        r1 = self.ZeroCenteredGradientPenalty(reals, real_logits)
        r2 = self.ZeroCenteredGradientPenalty(fakes, fake_logits)
        relativistic = real_logits - fake_logits
        loss = F.softplus(-relativistic)
        (Scale * (loss + Gamma / 2 * (r1 + r2)).mean()).backward()
        return [t.detach() for t in (loss, relativistic, r1, r2)]
