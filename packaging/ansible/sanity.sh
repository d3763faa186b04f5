#!/bin/sh
# Run `ansible-test sanity` on the berth.node collection, offline.
#
# ansible-test wants the collection at .../ansible_collections/berth/node
# and installs each test's pinned requirements with pip into a virtual
# environment under ~/.ansible/test/venv. This machine has no PyPI, so the
# tools come from Debian instead (hack/setup.sh installs them: pylint,
# yamllint, python3-pycodestyle, python3-voluptuous, shellcheck,
# python3-venv): for every test whose requirements Debian's Python
# provides, this script makes that virtual environment itself, with
# --system-site-packages and the marker ansible-test looks for, in a
# throw-away HOME, so ansible-test finds it ready and never runs pip.
# Tests that need something Debian does not ship are skipped by name:
#   changelog  antsibull-changelog (PyPI only; the collection has no
#              changelogs/ either)
#   pslint     PowerShell's PSScriptAnalyzer (no PowerShell content)
# Everything else runs, and the script prints which tests ran.
#
# Usage: packaging/ansible/sanity.sh   (exit status: ansible-test's)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# Debian's ansible-test and python3 (with PyYAML, Jinja2, pylint...), not
# a python3 a version manager put first on PATH.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
python=/usr/bin/python3
ansible_test=/usr/bin/ansible-test

for cmd in $python $ansible_test; do
	[ -x "$cmd" ] || { echo "sanity.sh: $cmd missing (apt-get install ansible-core)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/berth-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
coll=$work/ansible_collections/berth/node
mkdir -p "$coll"
# What `ansible-galaxy collection build` would package (examples/ is not
# part of the collection; see galaxy.yml's build_ignore).
(cd "$here" && tar -cf - --exclude=./examples --exclude=./tests/output --exclude='__pycache__' --exclude='*.tar.gz' .) | (cd "$coll" && tar -xf -)

HOME=$work/home
export HOME
mkdir -p "$HOME"

skip="changelog pslint"

# Make the virtual environments ansible-test would make with pip, from
# Debian's packages. Prints the tests that cannot run here (a module of
# theirs does not import), which are skipped too.
missing=$(cd "$coll" && $python - <<'EOF'
import importlib
import os
import subprocess

from ansible_test._internal.commands.sanity import SanitySingleVersion, hash_pip_commands, sanity_get_tests
from ansible_test._internal.host_configs import NativePythonConfig
from ansible_test._internal.python_requirements import collect_requirements

# What each test's requirements file pins, as the module Debian's package
# provides (the versions differ; ansible-test does not check them).
MODULES = {
    'ansible-doc': ['jinja2', 'yaml', 'packaging'],
    'changelog': ['antsibull_changelog'],
    'import.plugin': ['jinja2', 'yaml'],
    'import': ['yaml'],
    'pep8': ['pycodestyle'],
    'pylint': ['pylint', 'yaml'],
    'runtime-metadata': ['voluptuous', 'yaml'],
    'validate-modules': ['voluptuous', 'jinja2', 'yaml'],
    'yamllint': ['yamllint', 'yaml'],
}

python = NativePythonConfig(version='3.11', path='/usr/bin/python3')
made = set()
# The single-version tests, and the three environments of the import test:
# its module environment has no requirements (label "sanity", shared with
# the tests that need nothing), the plugin and external ones need PyYAML
# and Jinja2.
venvs = [(t.name, False) for t in sanity_get_tests() if isinstance(t, SanitySingleVersion)]
venvs += [('import.module', True), ('import.plugin', True), ('import', False)]
for name, minimize in venvs:
    commands = collect_requirements(python=python, controller=True, virtualenv=False, command=None, ansible=False,
                                    cryptography=False, coverage=False, minimize=minimize, sanity=name)
    missing = []
    for mod in MODULES.get(name, []) if commands else []:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        print(name)
        continue
    label = 'sanity.' + name if commands else 'sanity'
    path = os.path.join(os.path.expanduser('~/.ansible/test/venv'), label, '3.11', hash_pip_commands(commands))
    if path in made:
        continue
    made.add(path)
    # Debian's packages stand for the pinned requirements; an environment
    # without requirements stays bare, as pip would leave it, so the import
    # test still proves the modules need nothing beyond the standard library.
    site = ['--system-site-packages'] if commands else []
    subprocess.check_call(['/usr/bin/python3', '-m', 'venv', '--without-pip'] + site + [path])
    with open(os.path.join(path, 'meta.install.json'), 'w') as f:
        f.write('[]')
    with open(os.path.join(path, 'meta.yaml.json'), 'w') as f:
        # yamlcheck's answer: PyYAML with libyaml (Debian's has it).
        f.write('true' if hasattr(__import__('yaml'), 'CSafeLoader') else 'false')
    open(os.path.join(path, 'marker.txt'), 'w').close()
EOF
)
for t in $missing; do
	case " $skip " in *" $t "*) ;; *) skip="$skip $t" ;; esac
done

skip_args=
for t in $skip; do skip_args="$skip_args --skip-test $t"; done

echo "sanity.sh: skipping: $skip"
cd "$coll"
set +e
# shellcheck disable=SC2086 # skip_args is a list of words
$ansible_test sanity --local --python 3.11 --python-interpreter "$python" --color no $skip_args "$@" >"$work/log" 2>&1
rc=$?
set -e
cat "$work/log"
echo "sanity.sh: ran: $(sed -n 's/^Running sanity test "\([^"]*\)".*/\1/p' "$work/log" | sort -u | tr '\n' ' ')"
echo "sanity.sh: skipped by ansible-test: $(sed -n 's/^WARNING: Skipping sanity test "\([^"]*\)".*/\1/p' "$work/log" | sort -u | tr '\n' ' ')"
exit "$rc"
