#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: image
short_description: Pull or remove images on a berth node
version_added: 0.1.0
description:
  - Pulls an image into berthd's store (C(POST /berth/v1/images/pull), what C(berth image pull) does) or
    removes one (C(DELETE /berth/v1/images)).
  - A pull is judged by the node's trust policy (C(/etc/berth/policy.json), see M(berth.node.trust)) on the
    manifest and its signatures before any layer is fetched; a refused image fails the task with berthd's
    reason, e.g. C(... is rejected by the trust policy ...).
  - The store is listed first, so an image already stored under the reference is not pulled again (unless
    I(pull=always)) and a missing one is not removed; C(changed) only when something was pulled or removed.
options:
  ref:
    description:
      - The image reference, by tag or digest (C(registry.local:5000/apps/web:1.4), C(busybox), C(...@sha256:...)).
        Normalised as berth records references (C(busybox) is C(docker.io/library/busybox:latest)).
      - With I(state=absent) a digest or a digest prefix of 12 or more hex digits also names an image.
    type: str
    required: true
    aliases: [name, image]
  state:
    description: C(present) pulls when needed, C(absent) removes.
    type: str
    choices: [present, absent]
    default: present
  pull:
    description:
      - C(missing) pulls only when no stored image has the reference; C(always) pulls every time (resolving the
        tag again) and reports a change only when the reference then names another digest.
    type: str
    choices: [missing, always]
    default: missing
  timeout:
    description: Seconds a pull may stay silent (no progress line) before it is abandoned.
    type: int
    default: 600
extends_documentation_fragment:
  - berth.node.berth
attributes:
  check_mode:
    support: full
    description: Lists the store and reports what would be pulled or removed, without pulling or removing.
      The trust policy is not consulted in check mode (a refusal shows at the real pull).
  diff_mode:
    support: none
    description: Nothing to show a diff of.
author:
  - berth authors (@berth-dev)
'''

EXAMPLES = r'''
- name: Pull the application's image (judged by the trust policy)
  berth.node.image:
    ref: registry.local:5000/apps/web:1.4

- name: Always resolve the tag again
  berth.node.image:
    ref: registry.local:5000/apps/web:stable
    pull: always

- name: Remove an old image
  berth.node.image:
    ref: registry.local:5000/apps/web:1.3
    state: absent
'''

RETURN = r'''
digest:
  description: The image's manifest digest (pulled, found, or removed).
  returned: when an image was found, pulled or removed
  type: str
  sample: sha256:3f1a...
image:
  description: The stored image as berthd lists it (digest, refs, platform, layers, stored, lastUsed).
  returned: when an image was found, pulled or removed
  type: dict
judgement:
  description:
    - The trust policy's judgement of the pull (allowed, scope, rule, reason), or of the refusal.
  returned: when a pull happened
  type: dict
  sample: {"allowed": true, "scope": "registry.local:5000/apps", "rule": "sigstoreSigned"}
operation:
  description: What was done (in check mode, would have been). Not C(action), which Ansible sets to the module's name.
  returned: always
  type: str
  choices: [pulled, present, removed, absent]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berth.node.plugins.module_utils.berth import (
    BerthClient, BerthError, berth_argument_spec, normalize_ref,
)

IMAGES = '/berth/v1/images'
PULL = '/berth/v1/images/pull'


def find(images, ref):
    """The stored image ref names: by a recorded reference, a digest or a digest prefix."""
    want = normalize_ref(ref)
    digest = ref.split('@', 1)[1] if '@' in ref else ref
    for im in images:
        if want in (im.get('refs') or []):
            return im
        d = im.get('digest', '')
        if digest == d or (len(digest) >= 12 and (d.startswith(digest) or d.split(':', 1)[-1].startswith(digest))):
            return im
    return None


def pull(client, ref):
    """Pull ref to the end of berthd's stream: (image, judgement) or BerthError."""
    image, judgement = None, None
    for msg in client.stream('POST', PULL, query={'ref': ref}):
        if msg.get('status'):
            st = msg['status']
            raise BerthError(st.get('message') or 'pull failed', status=st.get('code'), reason=st.get('reason'), body=st)
        if msg.get('image'):
            image, judgement = msg['image'], msg.get('judgement')
    if image is None:
        raise BerthError('the pull of %s ended without an image (berthd stopped?)' % ref)
    return image, judgement


def main():
    spec = berth_argument_spec()
    spec.update(
        ref=dict(type='str', required=True, aliases=['name', 'image']),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        pull=dict(type='str', choices=['missing', 'always'], default='missing'),
        timeout=dict(type='int', default=600),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    client = BerthClient(p['socket'], timeout=p['timeout'])
    try:
        images = (client.request('GET', IMAGES) or {}).get('items') or []
        have = find(images, p['ref'])
        if p['state'] == 'absent':
            if have is None:
                module.exit_json(changed=False, operation='absent')
            if not module.check_mode:
                client.request('DELETE', IMAGES, query={'ref': have['digest']})
            module.exit_json(changed=True, operation='removed', digest=have['digest'], image=have)
        if have is not None and p['pull'] == 'missing':
            module.exit_json(changed=False, operation='present', digest=have['digest'], image=have)
        if module.check_mode:
            module.exit_json(changed=have is None, operation='pulled' if have is None else 'present',
                             **(dict(digest=have['digest'], image=have) if have else {}))
        image, judgement = pull(client, p['ref'])
    except BerthError as e:
        kw = {}
        if e.reason:
            kw['reason'] = e.reason
        module.fail_json(msg=e.message, **kw)
    changed = have is None or have.get('digest') != image.get('digest')
    module.exit_json(changed=changed, operation='pulled' if changed else 'present', digest=image.get('digest'),
                     image=image, judgement=judgement)


if __name__ == '__main__':
    main()
