#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: rollout
short_description: Wait for a Deployment's rollout on a berth node
version_added: 0.1.0
description:
  - Waits until a Deployment has rolled out, with the checks and words of C(kubectl rollout status)
    (k8s.io/kubectl's DeploymentStatusViewer) - its controller has seen the latest spec
    (C(status.observedGeneration >= metadata.generation)), all C(spec.replicas) are updated, no old replicas
    are left, and every updated replica is available.
  - Fails at once when the Deployment's C(Progressing) condition says C(ProgressDeadlineExceeded)
    (C(deployment "web" exceeded its progress deadline)), and after I(timeout) seconds with kubectl's
    C(timed out waiting for the condition) and the last status line.
  - Never reports a change. In check mode a Deployment that does not exist (created by a check run's
    M(berth.node.manifest) as a dry run only) is not waited for, with a warning.
options:
  name:
    description: The Deployment's name.
    type: str
    required: true
  namespace:
    description: The Deployment's namespace.
    type: str
    default: default
  timeout:
    description: Seconds to wait; 0 checks once without waiting.
    type: int
    default: 300
extends_documentation_fragment:
  - berth.node.berth
attributes:
  check_mode:
    support: full
    description: Only reads, so it runs (and waits) in check mode too.
  diff_mode:
    support: none
    description: Nothing to show a diff of.
author:
  - berth authors (@berth-dev)
'''

EXAMPLES = r'''
- name: Roll out a new image
  berth.node.manifest:
    definition: "{{ lookup('ansible.builtin.template', 'web.yaml.j2') }}"

- name: Wait for it, as kubectl rollout status would
  berth.node.rollout:
    name: web
    namespace: default
    timeout: 180
'''

RETURN = r'''
message:
  description: The last status line, as C(kubectl rollout status) prints it.
  returned: always
  type: str
  sample: deployment "web" successfully rolled out
status:
  description: The Deployment's status when the module ended.
  returned: when the Deployment exists
  type: dict
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berth.node.plugins.module_utils.berth import (
    BerthClient, BerthError, ResourceInfo, berth_argument_spec,
)


class RolloutFailed(Exception):
    pass


def deployment_status(d):
    """(message, done) as kubectl's DeploymentStatusViewer.Status; RolloutFailed for its errors."""
    name = d['metadata']['name']
    spec, status = d.get('spec') or {}, d.get('status') or {}
    if d['metadata'].get('generation', 0) <= status.get('observedGeneration', 0):
        for c in status.get('conditions') or []:
            if c.get('type') == 'Progressing' and c.get('reason') == 'ProgressDeadlineExceeded':
                raise RolloutFailed('deployment "%s" exceeded its progress deadline' % name)
        replicas = spec.get('replicas')
        updated = status.get('updatedReplicas', 0)
        if replicas is not None and updated < replicas:
            return ('Waiting for deployment "%s" rollout to finish: %d out of %d new replicas have been updated...'
                    % (name, updated, replicas)), False
        if status.get('replicas', 0) > updated:
            return ('Waiting for deployment "%s" rollout to finish: %d old replicas are pending termination...'
                    % (name, status.get('replicas', 0) - updated)), False
        if status.get('availableReplicas', 0) < updated:
            return ('Waiting for deployment "%s" rollout to finish: %d of %d updated replicas are available...'
                    % (name, status.get('availableReplicas', 0), updated)), False
        return 'deployment "%s" successfully rolled out' % name, True
    return 'Waiting for deployment spec update to be observed...', False


def main():
    spec = berth_argument_spec()
    spec.update(
        name=dict(type='str', required=True),
        namespace=dict(type='str', default='default'),
        timeout=dict(type='int', default=300),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    client = BerthClient(module.params['socket'])
    url = ResourceInfo('apps/v1', 'Deployment', 'deployments', True).url(module.params['namespace'], module.params['name'])
    start = time.time()
    deadline = start + module.params['timeout']
    message, d = '', None
    while True:
        try:
            d = client.request('GET', url)
        except BerthError as e:
            if e.status == 404 and module.check_mode:
                # A check run's manifest task created the Deployment as a
                # dry run only: there is nothing to wait for.
                module.warn('%s (check mode: not waited for)' % e.message)
                module.exit_json(changed=False, message='', waited=0.0)
            # Not found is final for kubectl too (it ends on the GET's error).
            module.fail_json(msg=e.message, reason=e.reason, waited=time.time() - start)
        try:
            message, done = deployment_status(d)
        except RolloutFailed as e:
            module.fail_json(msg=str(e), status=d.get('status'), message=str(e), waited=time.time() - start)
        if done:
            module.exit_json(changed=False, message=message, status=d.get('status'), waited=time.time() - start)
        if time.time() >= deadline:
            module.fail_json(msg='timed out waiting for the condition (%s)' % message, message=message,
                             status=d.get('status'), waited=time.time() - start)
        time.sleep(1)


if __name__ == '__main__':
    main()
