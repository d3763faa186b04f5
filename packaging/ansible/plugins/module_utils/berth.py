# -*- coding: utf-8 -*-
# Copyright: berth authors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

"""A client for berthd's API on its Unix socket.

Only Python's standard library: the modules run on the managed node with
whatever python3 it has, and berthd answers on a local socket, so neither
the kubernetes client nor requests is needed (or wanted) there.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import http.client
import json
import socket
import time

from urllib.parse import quote, urlencode

DEFAULT_SOCKET = '/run/berth/berth.sock'

# metadata fields the apiserver (and berth) set itself: a comparison of a
# desired object with a live one must not see them, or every apply would
# look like a change.
IGNORED_METADATA = ('resourceVersion', 'generation', 'managedFields', 'creationTimestamp', 'uid', 'selfLink')


def berth_argument_spec():
    """The options every module of the collection shares."""
    return dict(
        socket=dict(type='path', default=DEFAULT_SOCKET),
    )


class BerthError(Exception):
    """An error answer of berthd, or no answer at all.

    message is the apiserver's own text (metav1.Status.message) when the
    answer was a Status, so a playbook shows what kubectl would print.
    """

    def __init__(self, message, status=None, reason=None, body=None):
        super(BerthError, self).__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body = body


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=60):
        # The host only fills the Host header; berthd ignores it.
        http.client.HTTPConnection.__init__(self, 'localhost', timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except Exception:
            sock.close()
            raise
        self.sock = sock


def _status_error(status, raw):
    """Turn an error answer into a BerthError carrying the Status' message."""
    text = raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else raw
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get('kind') == 'Status':
        return BerthError(doc.get('message') or text.strip(), status=doc.get('code', status),
                          reason=doc.get('reason'), body=doc)
    return BerthError(text.strip() or 'HTTP %d' % status, status=status, body=text)


class ResourceInfo:
    """Where a kind lives in the API: its plural and whether it is namespaced."""

    def __init__(self, api_version, kind, plural, namespaced):
        self.api_version = api_version
        self.kind = kind
        self.plural = plural
        self.namespaced = namespaced

    def prefix(self):
        if '/' in self.api_version:
            return '/apis/' + self.api_version
        return '/api/' + self.api_version

    def url(self, namespace=None, name=None):
        path = self.prefix()
        if self.namespaced and namespace:
            path += '/namespaces/' + quote(namespace, safe='')
        path += '/' + self.plural
        if name:
            path += '/' + quote(name, safe='')
        return path


class BerthClient:
    """One module run's connection settings and discovery cache."""

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=60):
        self.socket_path = socket_path
        self.timeout = timeout
        # (apiVersion) -> {kind: ResourceInfo}; discovery is asked once per
        # group-version per run, as kubectl's memory cache would.
        self._resources = {}
        self._group_versions = None

    def _open(self, method, path, query=None, body=None, content_type='application/json', accept='application/json'):
        if query:
            path += '?' + urlencode(query, doseq=True)
        headers = {'Accept': accept, 'User-Agent': 'ansible-berth.node'}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode('utf-8')
            headers['Content-Type'] = content_type
        conn = UnixHTTPConnection(self.socket_path, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn, conn.getresponse()
        except (socket.error, OSError, http.client.HTTPException) as e:
            conn.close()
            raise BerthError('cannot reach berthd on %s: %s' % (self.socket_path, e))

    def request(self, method, path, query=None, body=None, content_type='application/json'):
        """One request; the decoded JSON answer, or BerthError."""
        conn, resp = self._open(method, path, query=query, body=body, content_type=content_type)
        try:
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            raise _status_error(resp.status, raw)
        if not raw:
            return None
        try:
            return json.loads(raw.decode('utf-8'))
        except ValueError:
            return raw.decode('utf-8', 'replace')

    def stream(self, method, path, query=None, body=None):
        """Yield the JSON lines of a streamed (application/x-ndjson) answer to its end."""
        conn, resp = self._open(method, path, query=query, body=body)
        try:
            if resp.status >= 400:
                raise _status_error(resp.status, resp.read())
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line.decode('utf-8'))
                except ValueError:
                    raise BerthError('berthd sent a line that is not JSON: %r' % line[:200])
        finally:
            conn.close()

    def get_or_none(self, path):
        """GET path; None when berthd answers 404."""
        try:
            return self.request('GET', path)
        except BerthError as e:
            if e.status == 404:
                return None
            raise

    # Discovery.

    def _discover(self, api_version):
        if '/' in api_version:
            path = '/apis/' + api_version
        else:
            path = '/api/' + api_version
        try:
            doc = self.request('GET', path)
        except BerthError as e:
            if e.status == 404:
                return {}
            raise
        kinds = {}
        for r in (doc or {}).get('resources', []):
            # Subresources (pods/log, deployments/scale) are not kinds one applies.
            if '/' in r.get('name', ''):
                continue
            kinds[r['kind']] = ResourceInfo(api_version, r['kind'], r['name'], bool(r.get('namespaced')))
        return kinds

    def served_api_versions(self):
        """Every group-version berthd serves (from /api and /apis)."""
        if self._group_versions is None:
            versions = list((self.request('GET', '/api') or {}).get('versions', []))
            for g in (self.request('GET', '/apis') or {}).get('groups', []):
                versions.extend(v['groupVersion'] for v in g.get('versions', []))
            self._group_versions = versions
        return self._group_versions

    def resource(self, api_version, kind):
        """The ResourceInfo of kind in api_version, or BerthError as kubectl words it."""
        if api_version not in self._resources:
            self._resources[api_version] = self._discover(api_version)
        info = self._resources[api_version].get(kind)
        if info is None:
            # kubectl's words for a kind no served group-version has.
            raise BerthError('resource mapping not found for kind "%s" in version "%s": no matches for kind "%s" in version "%s"; '
                             'berthd serves: %s' % (kind, api_version, kind, api_version, ', '.join(self.served_api_versions())))
        return info


def clean(obj):
    """obj without what the server owns: status and the IGNORED_METADATA fields.

    Used both to compare a dry-run result with the live object and to show
    diffs, so the two always agree.
    """
    if not isinstance(obj, dict):
        return obj
    out = copy.deepcopy(obj)
    out.pop('status', None)
    meta = out.get('metadata')
    if isinstance(meta, dict):
        for k in IGNORED_METADATA:
            meta.pop(k, None)
        # kubectl's client-side apply leaves this; berth's own patches never
        # write it, but an object first made by kubectl apply has it.
        ann = meta.get('annotations')
        if isinstance(ann, dict):
            ann.pop('kubectl.kubernetes.io/last-applied-configuration', None)
            if not ann:
                meta.pop('annotations')
    return out


def wait_until(predicate, timeout, interval=1.0):
    """Call predicate until it returns something true or timeout seconds pass.

    Returns (value, timed_out).
    """
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value, False
        if time.time() >= deadline:
            return value, True
        time.sleep(interval)


_SUFFIXES = {
    'n': 1e-9, 'u': 1e-6, 'm': 1e-3, '': 1.0,
    'k': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12, 'P': 1e15, 'E': 1e18,
    'Ki': 1024.0, 'Mi': 1024.0 ** 2, 'Gi': 1024.0 ** 3, 'Ti': 1024.0 ** 4, 'Pi': 1024.0 ** 5, 'Ei': 1024.0 ** 6,
}


def parse_quantity(q):
    """A Kubernetes resource.Quantity string as a float (None if unparsable)."""
    if q is None:
        return None
    if isinstance(q, (int, float)):
        return float(q)
    q = str(q).strip()
    for suffix in ('Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei', 'n', 'u', 'm', 'k', 'M', 'G', 'T', 'P', 'E'):
        if q.endswith(suffix):
            try:
                return float(q[:-len(suffix)]) * _SUFFIXES[suffix]
            except ValueError:
                return None
    try:
        return float(q)
    except ValueError:
        return None


def normalize_ref(ref):
    """An image reference as berth records it (docker.io/library/x:latest).

    The same rules as the distribution reference parser kubectl and berth
    use: the first component is a registry only if it has a dot or colon or
    is localhost; Docker Hub's official images live under library/; no tag
    and no digest means :latest.
    """
    name, digest = ref, ''
    if '@' in ref:
        name, digest = ref.split('@', 1)
    first, sep, rest = name.partition('/')
    if not sep or ('.' not in first and ':' not in first and first != 'localhost'):
        name = 'docker.io/' + name
    if name.startswith('docker.io/') and name.count('/') == 1:
        name = 'docker.io/library/' + name[len('docker.io/'):]
    last = name.rsplit('/', 1)[-1]
    if ':' not in last and not digest:
        name += ':latest'
    return name + ('@' + digest if digest else '')
