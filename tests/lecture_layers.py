"""The lecture's own from-scratch layers (makemore part 5), written out as the notebook has them,
so that ``from_lecture`` is tested against the real semantics."""

import torch


class Linear:
    def __init__(self, fan_in, fan_out, bias=True, generator=None):
        self.weight = torch.randn((fan_in, fan_out), generator=generator) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    def __init__(self, dim, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)
        self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)

    def __call__(self, x):
        if self.training:
            dim = 0 if x.ndim == 2 else (0, 1)
            xmean = x.mean(dim, keepdim=True)
            xvar = x.var(dim, keepdim=True)
        else:
            xmean, xvar = self.running_mean, self.running_var
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
        self.out = self.gamma * xhat + self.beta
        if self.training:
            with torch.no_grad():  # buffers pick up the leading unit axes of keepdim=True
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self):
        return []


class Embedding:
    def __init__(self, num_embeddings, embedding_dim, generator=None):
        self.weight = torch.randn((num_embeddings, embedding_dim), generator=generator)

    def __call__(self, IX):
        self.out = self.weight[IX]
        return self.out

    def parameters(self):
        return [self.weight]


class FlattenConsecutive:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        B, T, C = x.shape
        x = x.reshape(B, T // self.n, C * self.n)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        self.out = x
        return self.out

    def parameters(self):
        return []


class Sequential:
    def __init__(self, layers):
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        self.out = x
        return self.out

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


def lecture_model(vocab_size=27, n_embd=24, n_hidden=128, n_layers=3, hidden_bias=False, seed=42):
    """The lecture's hierarchical model, any depth."""
    g = torch.Generator().manual_seed(seed)
    layers = [Embedding(vocab_size, n_embd, generator=g)]
    width = n_embd
    for _ in range(n_layers):
        layers += [FlattenConsecutive(2), Linear(2 * width, n_hidden, bias=hidden_bias, generator=g),
                   BatchNorm1d(n_hidden), Tanh()]
        width = n_hidden
    layers.append(Linear(n_hidden, vocab_size, generator=g))
    with torch.no_grad():
        layers[-1].weight *= 0.1
    model = Sequential(layers)
    for p in model.parameters():
        p.requires_grad = True
    return model


def flat_model(vocab_size=27, n_embd=10, n_hidden=200, block_size=3, seed=42):
    g = torch.Generator().manual_seed(seed)
    model = Sequential([
        Embedding(vocab_size, n_embd, generator=g), FlattenConsecutive(block_size),
        Linear(n_embd * block_size, n_hidden, bias=False, generator=g), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, vocab_size, generator=g),
    ])
    for p in model.parameters():
        p.requires_grad = True
    return model


def train_steps(model, X, Y, steps=30, lr=0.1, seed=0):
    """The lecture's training loop, a few steps, so BatchNorm buffers and weights are real."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ix = torch.randint(0, X.shape[0], (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(X[ix]), Y[ix])
        for p in model.parameters():
            p.grad = None
        loss.backward()
        for p in model.parameters():
            p.data += -lr * p.grad
    for layer in model.layers:
        layer.training = False
    return model
