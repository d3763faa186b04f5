#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: info
short_description: Facts about a berth node - capacity, conditions, pods, usage, images
version_added: 0.1.0
description:
  - Reads the node (C(/api/v1/nodes)), its pods, their resource usage from the resource metrics API
    (C(metrics.k8s.io/v1beta1), what C(kubectl top) shows) and the stored images, and returns them both as
    return values and as the fact C(ansible_facts.berth).
  - Usage exists only after berthd has read the pods' cgroups twice (CPU is a rate between two reads; the
    interval is berthd.yaml's C(metrics.interval), 10s by default), so it is missing for a while after berthd
    starts and for a pod that just started; I(wait_for_usage) waits for the node's figures.
options:
  gather:
    description: What to read.
    type: list
    elements: str
    choices: [node, pods, usage, images]
    default: [node, pods, usage, images]
  namespace:
    description: Only pods (and their usage) of this namespace; all namespaces when omitted.
    type: str
  wait_for_usage:
    description: Wait until the node's usage is available (and every running pod's, when C(pods) is gathered).
    type: bool
    default: false
  usage_timeout:
    description: How many seconds I(wait_for_usage) waits before failing.
    type: int
    default: 60
extends_documentation_fragment:
  - berth.node.berth
attributes:
  check_mode:
    support: full
    description: Only reads.
  diff_mode:
    support: none
    description: Nothing to show a diff of.
author:
  - berth authors (@berth-dev)
'''

EXAMPLES = r'''
- name: Gather berth's facts
  berth.node.info:
    wait_for_usage: true

- name: Show the pods that are not ready
  ansible.builtin.debug:
    msg: "{{ ansible_facts.berth.pods | rejectattr('ready') | map(attribute='name') }}"
'''

RETURN = r'''
node:
  description: The Node - name, capacity, allocatable, conditions (type, status, reason, message), nodeInfo.
  returned: when node is gathered
  type: dict
pods:
  description: The pods - namespace, name, phase, ready (all containers ready), ready_containers (C(1/2)),
    restarts (sum over containers), images, node_name, pod_ip.
  returned: when pods is gathered
  type: list
  elements: dict
usage:
  description:
    - C(node) (cpu and memory as the API gives them, plus cpu_cores and memory_bytes as numbers, timestamp,
      window) and C(pods) (namespace, name, cpu, memory, cpu_cores, memory_bytes, containers).
    - C(available) is false while berthd has not collected twice yet.
  returned: when usage is gathered
  type: dict
images:
  description: The stored images (digest, refs, platform, layers, stored, lastUsed); null, with a warning, when the
    user may not list them (berth's own endpoints are for root and group C(berth)).
  returned: when images is gathered
  type: list
  elements: dict
ansible_facts:
  description: The same values under C(berth).
  returned: always
  type: dict
  contains:
    berth:
      description: node, pods, usage and images, as gathered.
      type: dict
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berth.node.plugins.module_utils.berth import (
    BerthClient, BerthError, berth_argument_spec, parse_quantity,
)


def node_facts(client):
    nodes = (client.request('GET', '/api/v1/nodes') or {}).get('items') or []
    if not nodes:
        return {}
    n = nodes[0]  # berth serves exactly one Node: this host
    status = n.get('status') or {}
    return dict(
        name=n['metadata']['name'],
        labels=n['metadata'].get('labels') or {},
        capacity=status.get('capacity') or {},
        allocatable=status.get('allocatable') or {},
        conditions=[dict(type=c.get('type'), status=c.get('status'), reason=c.get('reason'), message=c.get('message'))
                    for c in status.get('conditions') or []],
        node_info=status.get('nodeInfo') or {},
        addresses=status.get('addresses') or [],
    )


def pod_facts(client, namespace):
    path = '/api/v1/namespaces/%s/pods' % namespace if namespace else '/api/v1/pods'
    out = []
    for p in (client.request('GET', path) or {}).get('items') or []:
        spec, status = p.get('spec') or {}, p.get('status') or {}
        cs = status.get('containerStatuses') or []
        ready = sum(1 for c in cs if c.get('ready'))
        total = len(spec.get('containers') or [])
        out.append(dict(
            namespace=p['metadata'].get('namespace'),
            name=p['metadata']['name'],
            phase=status.get('phase'),
            ready=total > 0 and ready == total,
            ready_containers='%d/%d' % (ready, total),
            restarts=sum(c.get('restartCount', 0) for c in cs),
            images=[c.get('image') for c in spec.get('containers') or []],
            node_name=spec.get('nodeName'),
            pod_ip=status.get('podIP'),
            deleting=bool(p['metadata'].get('deletionTimestamp')),
        ))
    return out


def usage_entry(u):
    cpu, mem = u.get('cpu'), u.get('memory')
    return dict(cpu=cpu, memory=mem, cpu_cores=parse_quantity(cpu), memory_bytes=parse_quantity(mem))


def usage_facts(client, namespace):
    usage = dict(available=False, node=None, pods=[])
    try:
        nodes = (client.request('GET', '/apis/metrics.k8s.io/v1beta1/nodes') or {}).get('items') or []
    except BerthError as e:
        if e.status != 404:
            raise
        nodes = []
    if nodes:
        n = nodes[0]
        usage['node'] = dict(usage_entry(n.get('usage') or {}), name=n['metadata']['name'],
                             timestamp=n.get('timestamp'), window=n.get('window'))
        usage['available'] = True
    path = '/apis/metrics.k8s.io/v1beta1/%spods' % ('namespaces/%s/' % namespace if namespace else '')
    try:
        pods = (client.request('GET', path) or {}).get('items') or []
    except BerthError as e:
        if e.status != 404:
            raise
        pods = []
    for pm in pods:
        containers = [dict(usage_entry(c.get('usage') or {}), name=c.get('name')) for c in pm.get('containers') or []]
        cpu = sum(c['cpu_cores'] or 0 for c in containers)
        mem = sum(c['memory_bytes'] or 0 for c in containers)
        usage['pods'].append(dict(namespace=pm['metadata'].get('namespace'), name=pm['metadata']['name'],
                                  timestamp=pm.get('timestamp'), window=pm.get('window'),
                                  cpu_cores=cpu, memory_bytes=mem, containers=containers))
    return usage


def main():
    spec = berth_argument_spec()
    spec.update(
        gather=dict(type='list', elements='str', choices=['node', 'pods', 'usage', 'images'],
                    default=['node', 'pods', 'usage', 'images']),
        namespace=dict(type='str'),
        wait_for_usage=dict(type='bool', default=False),
        usage_timeout=dict(type='int', default=60),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    client = BerthClient(p['socket'])
    facts = {}
    try:
        if 'node' in p['gather']:
            facts['node'] = node_facts(client)
        if 'pods' in p['gather']:
            facts['pods'] = pod_facts(client, p['namespace'])
        if 'usage' in p['gather']:
            deadline = time.time() + p['usage_timeout']
            while True:
                usage = usage_facts(client, p['namespace'])
                complete = usage['available']
                if complete and 'pods' in facts:
                    # Every running pod's figures, not only the node's: a pod
                    # has them one collection after its containers started.
                    have = set((u['namespace'], u['name']) for u in usage['pods'])
                    complete = all((x['namespace'], x['name']) in have for x in facts['pods']
                                   if x['phase'] == 'Running' and not x['deleting'])
                if complete or not p['wait_for_usage']:
                    break
                if time.time() >= deadline:
                    module.fail_json(msg='no usage from berthd after %ds: the resource metrics API answers once berthd '
                                     'has read the cgroups twice (metrics.interval)' % p['usage_timeout'], usage=usage)
                time.sleep(2)
                if 'pods' in facts:
                    facts['pods'] = pod_facts(client, p['namespace'])
            facts['usage'] = usage
        if 'images' in p['gather']:
            try:
                facts['images'] = (client.request('GET', '/berth/v1/images') or {}).get('items') or []
            except BerthError as e:
                if e.status != 403:
                    raise
                # berth's own endpoints are for writers (root, group berth);
                # the rest of the facts are readable by every local user.
                module.warn('images not gathered: %s' % e.message)
                facts['images'] = None
    except BerthError as e:
        module.fail_json(msg=e.message)
    out = dict(changed=False, ansible_facts=dict(berth=facts))
    out.update(facts)
    module.exit_json(**out)


if __name__ == '__main__':
    main()
