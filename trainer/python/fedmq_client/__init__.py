"""fedmq_client: the Python client of fedmq (wire protocol v1, docs/PROTOCOL.md).

    wire         encode/decode of the protocol's messages (strict, like the C decoder)
    spec         safetensors files (numpy only) and the custom model fingerprint spec_name
    certs        CZMQ certificates for [security] mode = curve
    config       the federation's config as the daemons resolve it (`fedmq config`)
    client       Client: the sockets, membership, snapshots, acks and resends
    torch_utils  state_dict <-> numpy (imports torch when called)
    data         Fashion-MNIST and the federation's client partition (`fedmq partition`)
    models       PyTorch twins of the built-in models (torch)
    train        local training of one client (torch)
    trainer_cli  fedmq-py-trainer: a trainer pool for any PyTorch model
    evaluate     score(), the metrics file's record, Evaluator (torch)
    evaluator_cli fedmq-py-evaluator: the evaluator for any PyTorch model
    spec_cli     fedmq-py-spec: a custom model's spec file from its PyTorch definition
    cli          what the command-line tools share (options, model file, exit codes)
"""
from .wire import WireError, Model, Ack, PROTOCOL_VERSION  # noqa: F401
from .spec import spec_name, model_name, load_safetensors, save_safetensors  # noqa: F401
from .certs import Curve, load_cert  # noqa: F401
from .client import Client, Fate  # noqa: F401

__all__ = ["WireError", "Model", "Ack", "PROTOCOL_VERSION", "spec_name", "model_name",
           "load_safetensors", "save_safetensors", "Curve", "load_cert", "Client", "Fate"]
__version__ = "0.1.0"
