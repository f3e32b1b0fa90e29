"""Acknowledgements leave in arrival order, and a dropped connection voids what was pending."""

from gateway.adapters.mqtt import AckSequencer


def test_acks_wait_for_every_earlier_message() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    a, b, c = (seq.arrived("t", b"", 1, mid) for mid in (1, 2, 3))
    c.settle()
    b.settle()
    assert sent == []
    a.settle()
    assert sent == [1, 2, 3] and seq.unacknowledged == 0


def test_qos0_messages_are_settled_without_an_ack() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    zero, one = seq.arrived("t", b"", 0, 0), seq.arrived("t", b"", 1, 7)
    one.settle()
    zero.settle()
    assert sent == [7]


def test_messages_of_a_dropped_connection_are_never_acknowledged() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    old = seq.arrived("t", b"", 1, 5)
    seq.reset()
    assert old.stale
    new = seq.arrived("t", b"", 1, 5)  # the broker redelivers with the same id
    old.settle()
    assert sent == []
    new.settle()
    assert sent == [5]
