"""The servers a trainer talks to, played by a test: the broker's PUB (model_pub) and ROUTER
(snapshot), the aggregator's PULL (updates) and PUB (acks), bound to free loopback ports."""
import zmq

SERVER_SOCKETS = (("model_pub", "pub", zmq.PUB), ("snapshot", "router", zmq.ROUTER),
                  ("updates", "pull", zmq.PULL), ("acks", "acks", zmq.PUB))


class FakeServers:
    """self.pub, self.router, self.pull, self.acks and self.ep = {endpoint key: address}."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.ep = {}
        for key, attr, kind in SERVER_SOCKETS:
            s = self.ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            self.ep[key] = "tcp://127.0.0.1:%d" % s.bind_to_random_port("tcp://127.0.0.1")
            setattr(self, attr, s)
        self.peer = None

    def close(self):
        for s in (self.pub, self.router, self.pull, self.acks):
            s.close(0)
        self.ctx.term()
