"""PyTorch twins of fedmq's built-in models (shared/learn/fm_model.h): same tensor names,
shapes and forward pass, so a Python trainer's updates and the C trainers' fold into the
same model. Each returns log-probabilities (log_softmax); the loss is the mean NLL."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LogReg", "MLP", "FederatedNet", "builtin"]


class LogReg(nn.Module):
    """logreg: fc 784 -> 10."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)


class MLP(nn.Module):
    """mlp: 784 -> 200 -> 200 -> 10, relu."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


class FederatedNet(nn.Module):
    """cnn: the seed's FederatedNet (conv 32, conv 64, max-pool, dropout 0.25, fc 128,
    dropout 0.5, fc 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


_BUILTIN = {"logreg": LogReg, "mlp": MLP, "cnn": FederatedNet}


def builtin(name):
    """A new module of built-in model `name` ("logreg", "mlp", "cnn"); ValueError else."""
    try:
        return _BUILTIN[name]()
    except KeyError:
        raise ValueError(f"{name!r} is not a built-in model (logreg, mlp, cnn)") from None
