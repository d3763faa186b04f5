#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: trust
short_description: Manage a berth node's image trust policy and its keys
version_added: 0.1.0
description:
  - Writes berth's trust policy (containers-policy.json(5), as berth reads it - see
    C(/usr/share/doc/berth/POLICY.md)) and the public keys it names.
  - berthd reads the policy (and the key files it names) at every pull and at every container start or
    restart, so a change takes effect at once; berthd needs no restart.
  - The policy is checked before anything is written, with the rules berth's parser applies that can be
    checked without berth's code - the top-level keys, known transports, non-empty requirement lists,
    known requirement types and fields (case-sensitive), C(signedBy) refused in the scopes berth judges,
    and every key file the policy names present (or written by this task). berthd refuses a policy that
    does not parse, and then rejects every image, so a typo must not reach the node.
  - Files are written atomically (a temporary file renamed over the old one), mode 0644, and only when
    their content differs; a policy file whose JSON is equal to I(policy) is left as it is.
options:
  policy:
    description:
      - The whole policy document (C(default), C(transports)). Omit it to manage only I(keys).
    type: dict
  path:
    description: The policy file (berthd.yaml's C(policy)).
    type: path
    default: /etc/berth/policy.json
  keys:
    description:
      - Public keys (PEM) to write under I(keys_dir), as C(NAME.pub), by NAME. The policy names them by path,
        for example C(keyPath) C(/etc/berth/keys/NAME.pub).
      - Keys not listed are left alone.
    type: dict
    default: {}
  keys_dir:
    description: The directory of I(keys) (created 0755 when missing).
    type: path
    default: /etc/berth/keys
  validate:
    description: Check the policy before writing it (see above). Turn off only for a policy newer than this check.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Validates and reports what would change; writes nothing.
  diff_mode:
    support: full
    description: The policy and key files' text before and after.
author:
  - berth authors (@berth-dev)
'''

EXAMPLES = r'''
- name: Trust only images signed by the team's key
  berth.node.trust:
    keys:
      team: "{{ lookup('ansible.builtin.file', 'keys/team.pub') }}"
    policy:
      default: [{type: reject}]
      transports:
        docker:
          registry.local:5000/apps:
            - type: sigstoreSigned
              keyPath: /etc/berth/keys/team.pub
'''

RETURN = r'''
path:
  description: The policy file.
  returned: always
  type: str
  sample: /etc/berth/policy.json
policy_changed:
  description: Whether the policy file was (or would be) written.
  returned: always
  type: bool
keys_changed:
  description: The key files written (or that would be).
  returned: always
  type: list
  elements: str
  sample: [/etc/berth/keys/team.pub]
'''

import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

# verify/parse.go's knownTransports: containers-policy.json(5)'s.
TRANSPORTS = ('atomic', 'containers-storage', 'dir', 'docker', 'docker-archive', 'docker-daemon', 'oci',
              'oci-archive', 'sif', 'tarball')
# Transports whose scopes berth judges (the rest are only validated).
JUDGED = ('docker', 'oci')
# Fields of each requirement type, as verify decodes them (strict, case-sensitive).
FIELDS = {
    'reject': ('type',),
    'insecureAcceptAnything': ('type',),
    'signedBy': ('type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity'),
    'sigstoreSigned': ('type', 'keyPath', 'keyPaths', 'keyData', 'keyDatas', 'fulcio', 'pki', 'rekorPublicKeyPath',
                       'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas', 'signedIdentity',
                       'requiredAnnotations'),
}
FULCIO_FIELDS = ('caPath', 'caData', 'oidcIssuer', 'subjectEmail', 'subject', 'subjectRegExp', 'ctLogPublicKeyPath',
                 'ctLogPublicKeyData', 'insecureIgnoreSCT')
IDENTITY_FIELDS = ('type', 'dockerReference', 'dockerRepository', 'prefix', 'signedPrefix')
KEY_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


def _case_hint(key, known):
    for k in known:
        if k.lower() == key.lower():
            return '%s: keys are case-sensitive; did you mean "%s"?' % (key, k)
    return 'unknown field "%s"' % key


def _check_fields(loc, obj, known):
    if not isinstance(obj, dict):
        raise ValueError('%s: must be an object' % loc)
    for k in obj:
        if k not in known:
            raise ValueError('%s: %s' % (loc, _case_hint(k, known)))


def referenced_paths(req):
    """The files a requirement makes berth read (keys, CAs, log keys)."""
    out = []
    for f in ('keyPath', 'rekorPublicKeyPath'):
        if isinstance(req.get(f), str):
            out.append(req[f])
    for f in ('keyPaths', 'rekorPublicKeyPaths'):
        if isinstance(req.get(f), list):
            out.extend(p for p in req[f] if isinstance(p, str))
    fulcio = req.get('fulcio')
    if isinstance(fulcio, dict):
        for f in ('caPath', 'ctLogPublicKeyPath'):
            if isinstance(fulcio.get(f), str):
                out.append(fulcio[f])
    return out


def check_requirements(loc, reqs, judged):
    if not isinstance(reqs, list):
        raise ValueError('%s: must be a list of requirements' % loc)
    if not reqs:
        raise ValueError('%s: an empty list of requirements is not allowed (containers-policy.json(5))' % loc)
    paths = []
    for i, req in enumerate(reqs):
        where = '%s[%d]' % (loc, i)
        if not isinstance(req, dict) or 'type' not in req:
            raise ValueError('%s: a requirement is an object with a "type"' % where)
        typ = req['type']
        if typ not in FIELDS:
            raise ValueError('%s: unknown requirement type "%s" (known: reject, insecureAcceptAnything, sigstoreSigned, '
                             'signedBy)' % (where, typ))
        _check_fields('%s (%s)' % (where, typ), req, FIELDS[typ])
        if typ == 'signedBy' and judged:
            raise ValueError('%s: GPG "simple signing" is not supported by berth; use "sigstoreSigned" with cosign '
                             'signatures' % where)
        if typ == 'sigstoreSigned':
            if isinstance(req.get('fulcio'), dict):
                _check_fields('%s (sigstoreSigned).fulcio' % where, req['fulcio'], FULCIO_FIELDS)
            if 'signedIdentity' in req:
                _check_fields('%s (sigstoreSigned).signedIdentity' % where, req['signedIdentity'], IDENTITY_FIELDS)
            sources = [f for f in ('keyPath', 'keyPaths', 'keyData', 'keyDatas', 'fulcio', 'pki') if f in req]
            if len(sources) != 1:
                raise ValueError('%s (sigstoreSigned): exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio '
                                 'or pki is required, found %s' % (where, ', '.join(sources) or 'none'))
        paths.extend(referenced_paths(req))
    return paths


def check_policy(policy):
    """Structural validation; the file paths the policy names. ValueError on the first problem."""
    _check_fields('policy', policy, ('default', 'transports'))
    paths = []
    if 'default' in policy:
        paths.extend(check_requirements('default', policy['default'], True))
    transports = policy.get('transports') or {}
    if not isinstance(transports, dict):
        raise ValueError('transports: must be an object of transports')
    for transport, scopes in transports.items():
        if transport not in TRANSPORTS:
            raise ValueError('transports: unknown transport "%s" (%s)' % (
                transport, _case_hint(transport, TRANSPORTS) if transport.lower() in TRANSPORTS
                else 'containers-policy.json(5) transports: ' + ', '.join(TRANSPORTS)))
        if not isinstance(scopes, dict):
            raise ValueError('transports.%s: must be an object of scopes' % transport)
        for scope, reqs in scopes.items():
            loc = 'transports.%s["%s"]' % (transport, scope)
            if transport == 'oci' and scope and (not scope.startswith('/') or os.path.normpath(scope) != scope):
                raise ValueError('%s: an oci scope is a clean absolute directory path' % loc)
            paths.extend(check_requirements(loc, reqs, transport in JUDGED or (transport == 'oci-archive' and not scope)))
    return paths


def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except (IOError, OSError):
        return None


def write_atomic(path, data, mode=0o644):
    """Replace path by data at once: readers see the old file or the new, never half of one."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=d)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            policy=dict(type='dict'),
            path=dict(type='path', default='/etc/berth/policy.json'),
            keys=dict(type='dict', default={}, no_log=False),
            keys_dir=dict(type='path', default='/etc/berth/keys'),
            validate=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    diffs = []
    writes = []  # (path, bytes, is_dir_needed)

    for name in sorted(p['keys']):
        if not KEY_NAME.match(name):
            module.fail_json(msg='keys: "%s" is not a file name (letters, digits, ".", "_", "-")' % name)
        pem = p['keys'][name]
        if not isinstance(pem, str) or '-----BEGIN' not in pem:
            module.fail_json(msg='keys.%s: not a PEM public key' % name)
        data = (pem.strip() + '\n').encode('utf-8')
        path = os.path.join(p['keys_dir'], name + '.pub')
        old = read(path)
        if old != data or file_mode(path) != 0o644:
            writes.append((path, data))
            diffs.append(dict(before=(old or b'').decode('utf-8', 'replace'), after=data.decode('utf-8'),
                              before_header=path, after_header=path))

    policy_changed = False
    if p['policy'] is not None:
        if p['validate']:
            try:
                paths = check_policy(p['policy'])
            except ValueError as e:
                module.fail_json(msg='trust policy %s: %s' % (p['path'], e))
            written = set(w[0] for w in writes)
            missing = [x for x in paths if x not in written and not os.path.exists(x)]
            if missing:
                module.fail_json(msg='trust policy %s: names files that do not exist: %s (berthd would reject every '
                                 'image)' % (p['path'], ', '.join(sorted(set(missing)))))
        data = (json.dumps(p['policy'], indent=2, sort_keys=True) + '\n').encode('utf-8')
        old = read(p['path'])
        same = False
        if old is not None:
            try:
                same = json.loads(old.decode('utf-8')) == p['policy']
            except ValueError:
                same = False
        if not same or file_mode(p['path']) != 0o644:
            policy_changed = True
            # Equal JSON with another mode keeps its text; only the mode is fixed.
            writes.append((p['path'], old if same else data))
            diffs.append(dict(before=(old or b'').decode('utf-8', 'replace'), after=(old if same else data).decode('utf-8'),
                              before_header=p['path'], after_header=p['path']))

    if writes and not module.check_mode:
        try:
            if p['keys'] and not os.path.isdir(p['keys_dir']):
                os.makedirs(p['keys_dir'], 0o755)
            pdir = os.path.dirname(p['path'])
            if p['policy'] is not None and not os.path.isdir(pdir):
                os.makedirs(pdir, 0o755)
            # Keys first: a new policy naming a new key must find it.
            for path, data in writes:
                write_atomic(path, data)
        except (IOError, OSError) as e:
            module.fail_json(msg='writing %s: %s' % (e.filename or '', e))

    out = dict(changed=bool(writes), path=p['path'], policy_changed=policy_changed,
               keys_changed=[w[0] for w in writes if w[0] != p['path']])
    if module._diff:
        out['diff'] = diffs
    module.exit_json(**out)


if __name__ == '__main__':
    main()
