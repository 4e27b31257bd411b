#!/usr/bin/env python3
"""place.py — decide where each microservice of a deployment descriptor would run.

    place.py <descriptor.json> <nodes.json>

The same program as examples/embed/place.c, written with the Python binding: services are placed
one after the other with reservations, so each sees what the previous ones took.
Exit status: 0 all placed, 1 some not placed, 2 bad input.
"""

import json
import sys

import oakuk


def print_error(what, error):
    if not error.items:
        print("%s: %s" % (what, error.message), file=sys.stderr)
    for path, message in error.items:
        print("%s: %s" % (path, message), file=sys.stderr)


def load_nodes(path):
    try:
        with open(path, encoding="utf-8") as f:
            documents = json.load(f)
    except (OSError, ValueError) as exc:
        print("%s: %s" % (path, exc), file=sys.stderr)
        return None
    if not isinstance(documents, list):
        print("%s: expected a JSON array of node reports" % path, file=sys.stderr)
        return None
    nodes = []
    for i, doc in enumerate(documents):
        try:
            nodes.append(oakuk.NodeReport.from_json(doc))
        except oakuk.OakukError as exc:
            print_error("%s: node [%d]" % (path, i), exc)
            return None
    return nodes


def place(ms, nodes, reservations):
    name = ms.service_name or ms.name
    p = oakuk.select_node(ms, nodes, reservations=reservations,
                          reserve_key=oakuk.instance_name(name, 0))
    if p.ok:
        via = " via " + p.accel if p.accel else ""
        # a container without arch[] runs in the node's own architecture
        arch = p.arch or nodes[p.index].architecture
        print("%s: %s (%s %s%s)" % (name, p.target, p.virt, arch, via))
    else:
        print("%s: not placed (%s)" % (name, p.status))
    # why: one line per candidate node, chosen or not
    for line in p.explanation:
        print("    " + line)
    return p.ok


def main(argv):
    if len(argv) != 3:
        print("usage: %s <descriptor.json> <nodes.json>" % argv[0], file=sys.stderr)
        return 2
    try:
        descriptor = oakuk.Descriptor.parse_file(argv[1])
    except oakuk.OakukError as exc:
        print_error(argv[1], exc)
        return 2
    nodes = load_nodes(argv[2])
    if nodes is None:
        return 2
    reservations = oakuk.Reservations()
    placed = [place(ms, nodes, reservations) for ms in descriptor.microservices]
    return 0 if all(placed) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
