#!/usr/bin/env python3
"""An independent Kafka client for segstream's end-to-end tests (kafka-python: a pure-Python
implementation of the protocol, nothing shared with librdkafka).

  produce --broker HOST:PORT --topic T [--file F | stdin] [--max-request-size BYTES]
                                                             one message per line, keyed by
                                                             the line's customer_id if any
  consume --broker HOST:PORT --topic T --count N --timeout S
                                                             [--max-value-chars N]
                                                             prints one JSON object per
                                                             message: key, value (cut to N
                                                             characters), value_len, headers
"""
import argparse
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer


def produce(args):
    # One record per batch (batch_size=0): tansu 0.6 answers a fetch that starts inside a
    # record batch with the batches *after* it, so a consumer resuming mid-batch (after a
    # pause, a restart or a rebalance, from a committed offset) would never see the rest of
    # that batch. Kafka returns the batch holding the offset; this works around the broker.
    producer = KafkaProducer(bootstrap_servers=args.broker, acks="all", linger_ms=5,
                             batch_size=0, max_request_size=args.max_request_size)
    lines = open(args.file, "rb").read().splitlines() if args.file else sys.stdin.buffer.read().splitlines()
    futures = []
    for line in lines:
        if not line.strip():
            continue
        key = None
        try:
            obj = json.loads(line)
            # Keyed as producers key events: by the customer id, else the anonymous id.
            if isinstance(obj, dict):
                for field in ("customer_id", "anonymous_id"):
                    if isinstance(obj.get(field), str):
                        key = obj[field].encode()
                        break
        except ValueError:
            pass
        futures.append(producer.send(args.topic, value=line, key=key))
    for f in futures:
        f.get(timeout=30)
    producer.flush()
    producer.close()
    print(len(futures))


def consume(args):
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.broker, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=500)
    got = 0
    deadline = time.time() + args.timeout
    while got < args.count and time.time() < deadline:
        for msg in consumer:
            out = {
                "key": msg.key.decode() if msg.key is not None else None,
                # None: a tombstone (compacted topics).
                "value": msg.value.decode("utf-8", "replace")[:args.max_value_chars] if msg.value is not None else None,
                "value_len": len(msg.value) if msg.value is not None else None,
                "headers": {k: v.decode("utf-8", "replace") for k, v in (msg.headers or [])},
                "partition": msg.partition,
            }
            print(json.dumps(out), flush=True)
            got += 1
            if got >= args.count or time.time() >= deadline:
                break
    consumer.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("produce")
    a.add_argument("--broker", required=True)
    a.add_argument("--topic", required=True)
    a.add_argument("--file")
    a.add_argument("--max-request-size", type=int, default=1048576)
    b = sub.add_parser("consume")
    b.add_argument("--broker", required=True)
    b.add_argument("--topic", required=True)
    b.add_argument("--count", type=int, required=True)
    b.add_argument("--timeout", type=float, default=30)
    b.add_argument("--max-value-chars", type=int, default=None)
    args = p.parse_args()
    produce(args) if args.cmd == "produce" else consume(args)


if __name__ == "__main__":
    main()
