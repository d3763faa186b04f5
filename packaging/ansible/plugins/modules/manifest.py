#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: manifest
short_description: Apply or remove Kubernetes manifests on a berth node
version_added: 0.1.0
description:
  - Creates, patches or deletes Kubernetes objects through berthd's API on its Unix socket, for every kind
    berthd serves (found through API discovery, so a kind berthd adds later works too).
  - An object that does not exist is created. One that exists is compared with what a strategic-merge
    patch of the manifest would make of it (berthd computes that with C(dryRun=All)); only when the two
    differ, ignoring C(status) and the metadata the server owns (C(resourceVersion), C(generation),
    C(managedFields), C(creationTimestamp), C(uid)), is the patch sent. So a second run reports no change
    and writes nothing.
  - berthd does not serve server-side apply, and this module keeps no last-applied annotation, so a field
    removed from a manifest is not removed from the live object (as with C(kubectl patch)); delete and
    re-create, or set the field to its new value.
  - The manifest may be given on the controller as a file (I(src)) or as a YAML string; the collection's
    action plugin reads and parses it there, so the managed node needs no YAML library.
options:
  definition:
    description:
      - The manifest(s) - a dict, a list of dicts, or a YAML or JSON string holding one or more documents.
      - A C(List) object (any kind ending in C(List)) stands for its C(items).
    type: raw
    aliases: [resource_definition]
  src:
    description:
      - A file on the controller holding one or more YAML documents (searched like M(ansible.builtin.copy)'s
        C(src), in the role's or play's C(files/)). Read by the action plugin; mutually exclusive with
        I(definition).
    type: path
  namespace:
    description:
      - The namespace of namespaced objects whose manifest names none. Ignored for cluster-scoped kinds.
    type: str
    default: default
  state:
    description:
      - C(present) creates or patches, C(absent) deletes.
    type: str
    choices: [present, absent]
    default: present
  merge_type:
    description:
      - How an existing object is patched with the manifest. C(strategic-merge) (what C(kubectl apply) and
        C(kubectl patch) use) merges lists such as C(containers) by their keys; C(merge) (RFC 7386) replaces
        every list the manifest names as a whole.
    type: str
    choices: [strategic-merge, merge]
    default: strategic-merge
  wait:
    description:
      - With I(state=absent), wait until each deleted object is gone (a pod's graceful deletion ends when
        its containers have stopped; a namespace's when its content is deleted).
    type: bool
    default: false
  wait_timeout:
    description:
      - How many seconds I(wait) waits before failing.
    type: int
    default: 120
extends_documentation_fragment:
  - berth.node.berth
attributes:
  check_mode:
    support: full
    description: Creates, patches and deletes are sent with C(dryRun=All), so berthd validates and admits
      them without storing anything.
  diff_mode:
    support: full
    description: Shows each object as it is and as it would be, without status and server-owned metadata.
author:
  - berth authors (@berth-dev)
'''

EXAMPLES = r'''
- name: A ConfigMap and a Deployment
  berth.node.manifest:
    definition:
      - apiVersion: v1
        kind: ConfigMap
        metadata: {name: web-config}
        data: {greeting: hello}
      - apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: web
                  image: registry.local:5000/apps/web:1.4

- name: Everything in a file on the controller (multi-document YAML)
  berth.node.manifest:
    src: manifests/monitoring.yaml
    namespace: monitoring

- name: From a template
  berth.node.manifest:
    definition: "{{ lookup('ansible.builtin.template', 'web.yaml.j2') }}"

- name: Remove the Deployment and wait until its pods are gone
  berth.node.manifest:
    state: absent
    wait: true
    definition:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: web}
'''

RETURN = r'''
results:
  description: One entry per object, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: The object's kind.
      type: str
      sample: Deployment
    api_version:
      description: The object's apiVersion.
      type: str
      sample: apps/v1
    name:
      description: The object's name.
      type: str
      sample: web
    namespace:
      description: The object's namespace; empty for cluster-scoped kinds.
      type: str
      sample: default
    action:
      description: What was done (or, in check mode, would have been).
      type: str
      choices: [created, patched, unchanged, deleted, absent]
      sample: patched
    changed:
      description: Whether this object changed.
      type: bool
    object:
      description: The object as berthd answered (created, patched, live or, in check mode, the dry run's
        result); for C(deleted), the object as it was before the delete; absent for C(absent).
      type: dict
      returned: unless action is absent
diff:
  description: With C(--diff), each changed object before and after, without status and server-owned
    metadata.
  returned: when diff mode is on
  type: list
  elements: dict
'''

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berth.node.plugins.module_utils.berth import (
    BerthClient, BerthError, berth_argument_spec, clean, wait_until,
)


def expand(definition):
    """The objects definition stands for, as a flat list of dicts."""
    if definition is None:
        return []
    if isinstance(definition, str):
        # The action plugin parses YAML on the controller; a string reaching
        # the module means the action plugin was bypassed, so take JSON
        # (one document, or a list), which the standard library parses.
        text = definition.strip()
        if not text:
            return []
        try:
            definition = json.loads(text)
        except ValueError as e:
            raise ValueError('definition is a string that is not JSON (%s); YAML strings are parsed by the '
                             'collection\'s action plugin on the controller' % e)
    if isinstance(definition, dict):
        definition = [definition]
    if not isinstance(definition, list):
        raise ValueError('definition must be a dict, a list of dicts or a YAML/JSON string, not %s' % type(definition).__name__)
    out = []
    for d in definition:
        if d is None:
            continue  # an empty YAML document
        if not isinstance(d, dict):
            raise ValueError('every manifest must be a dict, got %s' % type(d).__name__)
        if str(d.get('kind', '')).endswith('List') and isinstance(d.get('items'), list):
            out.extend(expand(d['items']))
            continue
        out.append(d)
    return out


def describe(obj):
    meta = obj.get('metadata') or {}
    name = meta.get('name', '')
    ns = meta.get('namespace')
    return '%s %s' % (obj.get('kind', '?'), '%s/%s' % (ns, name) if ns else name)


class Manifest:
    def __init__(self, module):
        self.module = module
        self.client = BerthClient(module.params['socket'])
        self.check = module.check_mode
        self.dry = {'dryRun': 'All'} if module.check_mode else None
        self.diffs = []

    def prepare(self, obj):
        """Validate obj's identity and fill in its namespace; its ResourceInfo and URL."""
        for field in ('apiVersion', 'kind'):
            if not obj.get(field):
                raise BerthError('a manifest has no %s: %s' % (field, json.dumps(obj, sort_keys=True)[:300]))
        meta = obj.setdefault('metadata', {})
        if not isinstance(meta, dict) or not meta.get('name'):
            raise BerthError('%s: metadata.name is required (generateName is not supported: it would create an '
                             'object at every run)' % obj['kind'])
        info = self.client.resource(obj['apiVersion'], obj['kind'])
        if info.namespaced:
            if not meta.get('namespace'):
                meta['namespace'] = self.module.params['namespace']
        else:
            meta.pop('namespace', None)
        return info

    def result(self, obj, info, action, changed, live=None):
        meta = obj['metadata']
        r = dict(kind=obj['kind'], api_version=obj['apiVersion'], name=meta['name'],
                 namespace=meta.get('namespace', '') if info.namespaced else '', action=action, changed=changed)
        if live is not None:
            r['object'] = live
        return r

    def add_diff(self, obj, before, after):
        if self.module._diff:
            label = describe(obj)
            self.diffs.append(dict(before=clean(before) if before else {}, after=clean(after) if after else {},
                                   before_header=label, after_header=label))

    def present(self, obj):
        info = self.prepare(obj)
        meta = obj['metadata']
        ns = meta.get('namespace')
        url = info.url(ns, meta['name'])
        live = self.client.get_or_none(url)
        if live is None:
            try:
                created = self.client.request('POST', info.url(ns), query=self.dry, body=obj)
            except BerthError as e:
                # A check run that creates a namespace and objects in it:
                # the namespace's creation was a dry run, so the objects'
                # are refused as "namespaces ... not found". Report the
                # creation unvalidated rather than fail a --check of a
                # playbook that would succeed.
                if not (self.check and ns and e.status == 404 and 'namespaces "%s" not found' % ns in e.message):
                    raise
                self.module.warn('%s: namespace %s does not exist (yet): the creation was not validated by berthd in '
                                 'check mode' % (describe(obj), ns))
                created = obj
            self.add_diff(obj, None, created)
            return self.result(obj, info, 'created', True, created)
        # What the patch would make of the live object: berthd's own
        # defaulting and merge rules decide, not a client-side guess.
        ctype = 'application/%s-patch+json' % self.module.params['merge_type']
        would = self.client.request('PATCH', url, query={'dryRun': 'All'}, body=obj, content_type=ctype)
        if clean(would) == clean(live):
            return self.result(obj, info, 'unchanged', False, live)
        self.add_diff(obj, live, would)
        if self.check:
            return self.result(obj, info, 'patched', True, would)
        # resourceVersion of the compared object as a precondition: if
        # someone wrote in between, berthd answers 409 instead of this run
        # patching over a state it did not look at.
        body = dict(obj)
        body['metadata'] = dict(meta, resourceVersion=live['metadata'].get('resourceVersion'))
        patched = self.client.request('PATCH', url, body=body, content_type=ctype)
        return self.result(obj, info, 'patched', True, patched)

    def absent(self, obj):
        info = self.prepare(obj)
        meta = obj['metadata']
        url = info.url(meta.get('namespace'), meta['name'])
        live = self.client.get_or_none(url)
        if live is None:
            return self.result(obj, info, 'absent', False)
        try:
            self.client.request('DELETE', url, query=self.dry)
        except BerthError as e:
            if e.status != 404:  # gone in between: what was asked for
                raise
        self.add_diff(obj, live, None)
        if self.module.params['wait'] and not self.check:
            uid = live['metadata'].get('uid')

            def gone():
                cur = self.client.get_or_none(url)
                # A new object of the same name (another uid) is not the one deleted.
                return cur is None or cur['metadata'].get('uid') != uid
            dummy, timed_out = wait_until(gone, self.module.params['wait_timeout'])
            if timed_out:
                raise BerthError('%s: still there after %ds (wait_timeout)' % (describe(obj), self.module.params['wait_timeout']))
        return self.result(obj, info, 'deleted', True, live)


def main():
    spec = berth_argument_spec()
    spec.update(
        definition=dict(type='raw', aliases=['resource_definition']),
        src=dict(type='path'),
        namespace=dict(type='str', default='default'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        merge_type=dict(type='str', choices=['strategic-merge', 'merge'], default='strategic-merge'),
        wait=dict(type='bool', default=False),
        wait_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[('definition', 'src')], required_one_of=[('definition', 'src')])
    if module.params['src'] is not None:
        module.fail_json(msg='src is read on the controller by the berth.node.manifest action plugin; '
                             'it reached the module, so the action plugin did not run')
    try:
        objs = expand(module.params['definition'])
    except ValueError as e:
        module.fail_json(msg=str(e))
    m = Manifest(module)
    results = []
    for obj in objs:
        try:
            if module.params['state'] == 'present':
                results.append(m.present(obj))
            else:
                results.append(m.absent(obj))
        except BerthError as e:
            # The apiserver's message as is (what kubectl prints after
            # "Error from server (Reason):"), naming the object it concerns.
            kw = dict(results=results, changed=any(r['changed'] for r in results))
            if e.reason:
                kw['reason'] = e.reason
            if e.status:
                kw['status'] = e.status
            module.fail_json(msg='%s: %s' % (describe(obj), e.message) if obj.get('kind') else e.message, **kw)
    out = dict(changed=any(r['changed'] for r in results), results=results)
    if module._diff:
        out['diff'] = m.diffs
    module.exit_json(**out)


if __name__ == '__main__':
    main()
