# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

"""Controller side of berth.node.manifest: YAML is parsed here.

The module runs on the managed node with the standard library only (no
PyYAML there), so a manifest file (src) or a YAML string (definition) is
read and parsed on the controller, where ansible-core brings PyYAML, and
the module receives a list of dicts.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import yaml

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.action import ActionBase


def _load_all(text, where):
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise AnsibleActionFail('%s is not valid YAML: %s' % (where, to_native(e)))
    # Empty documents (a trailing "---") are no objects.
    return [d for d in docs if d is not None]


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('definition', 'resource_definition', 'src', 'namespace', 'state', 'merge_type', 'wait',
                             'wait_timeout', 'socket'))

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = dict()
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect

        args = dict(self._task.args)
        if 'resource_definition' in args:
            args['definition'] = args.pop('resource_definition')
        src = args.pop('src', None)
        try:
            if src is not None:
                if args.get('definition') is not None:
                    raise AnsibleActionFail('definition and src are mutually exclusive')
                try:
                    path = self._find_needle('files', src)
                except AnsibleError as e:
                    raise AnsibleActionFail(to_native(e))
                b_data, dummy = self._loader._get_file_contents(path)
                args['definition'] = _load_all(to_text(b_data, errors='surrogate_or_strict'), src)
            elif isinstance(args.get('definition'), str):
                args['definition'] = _load_all(args['definition'], 'definition')
        except AnsibleActionFail as e:
            result.update(failed=True, msg=to_native(e))
            return result

        result.update(self._execute_module(module_name='berth.node.manifest', module_args=args,
                                           task_vars=task_vars))
        return result
