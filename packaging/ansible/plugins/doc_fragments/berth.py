# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # The option every module shares: where berthd listens.
    DOCUMENTATION = r'''
options:
  socket:
    description:
      - Path of berthd's Unix socket on the managed node (C(socket.path) in C(/etc/berth/berthd.yaml)).
      - The module talks HTTP to it with Python's standard library only; the connecting user must be
        root or in group C(berth) to write (other users only read pods, events, nodes and namespaces).
    type: path
    default: /run/berth/berth.sock
requirements:
  - berthd running on the managed node (the C(berth) package).
  - Python 3.6 or later on the managed node; nothing outside the standard library.
'''
