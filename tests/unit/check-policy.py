#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Checks polkit/org.cistern.Cistern1.policy against SPEC §5.

usage: check-policy.py [--xmllint PATH] POLICY

Runs `xmllint --noout` (well-formedness; also DTD validation when polkit's DTD is installed),
then asserts that the file declares exactly the actions of SPEC §5 with exactly their default
(allow_any, allow_inactive, allow_active) triples.
"""

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ADMIN_KEEP_X3 = ('auth_admin_keep', 'auth_admin_keep', 'auth_admin_keep')

# SPEC §5, column "default (any / inactive / active)".
EXPECTED = {
    'org.cistern.pool.manage':        ADMIN_KEEP_X3,
    'org.cistern.volume.create':      ('auth_admin', 'auth_admin', 'auth_admin_keep'),
    'org.cistern.volume.modify':      ADMIN_KEEP_X3,
    'org.cistern.volume.modify-own':  ('auth_admin', 'auth_admin', 'yes'),
    'org.cistern.volume.read':        ADMIN_KEEP_X3,
    'org.cistern.volume.read-own':    ('auth_admin', 'auth_admin', 'yes'),
    'org.cistern.volume.attach':      ADMIN_KEEP_X3,
    'org.cistern.volume.attach-own':  ('auth_admin', 'auth_admin', 'auth_admin_keep'),
    'org.cistern.volume.mount':       ADMIN_KEEP_X3,
    'org.cistern.volume.mount-own':   ('auth_admin', 'auth_admin', 'auth_admin_keep'),
    'org.cistern.job.cancel':         ADMIN_KEEP_X3,
}

VALID_RESULTS = {'no', 'yes', 'auth_self', 'auth_self_keep', 'auth_admin', 'auth_admin_keep'}
DTD = '/usr/share/polkit-1/policyconfig-1.dtd'

errors = []


def fail(msg):
    errors.append(msg)


def run_xmllint(xmllint, policy):
    cmd = [xmllint, '--noout', '--nonet']
    if os.path.exists(DTD):
        cmd += ['--dtdvalid', DTD]
    r = subprocess.run(cmd + [policy], check=False)
    if r.returncode != 0:
        fail(f'{" ".join(cmd)} {policy} failed with exit status {r.returncode}')


def untranslated(action, tag):
    return [e for e in action.findall(tag)
            if '{http://www.w3.org/XML/1998/namespace}lang' not in e.attrib]


def check_text(aid, action, tag):
    elems = untranslated(action, tag)
    if len(elems) != 1:
        fail(f'{aid}: expected one untranslated <{tag}>, found {len(elems)}')
        return ''
    text = (elems[0].text or '').strip()
    if not text:
        fail(f'{aid}: empty <{tag}>')
    return text


def check_action(aid, action):
    check_text(aid, action, 'description')
    message = check_text(aid, action, 'message')
    if aid.endswith('-own') and 'your own' not in message:
        fail(f'{aid}: <message> should say "your own": {message!r}')

    defaults = action.findall('defaults')
    if len(defaults) != 1:
        fail(f'{aid}: expected one <defaults>, found {len(defaults)}')
        return
    got = []
    for tag in ('allow_any', 'allow_inactive', 'allow_active'):
        elems = defaults[0].findall(tag)
        value = (elems[0].text or '').strip() if len(elems) == 1 else None
        if value not in VALID_RESULTS:
            fail(f'{aid}: <{tag}> is {value!r}')
        got.append(value)
    if tuple(got) != EXPECTED[aid]:
        fail(f'{aid}: defaults {tuple(got)}, SPEC §5 says {EXPECTED[aid]}')
    # LESSONS (CVE-2025-6018): nothing that attaches or mounts is granted without a password.
    if ('.attach' in aid or '.mount' in aid) and 'yes' in got:
        fail(f'{aid}: attach/mount actions must never default to "yes"')


def check_policy(policy):
    root = ET.parse(policy).getroot()
    if root.tag != 'policyconfig':
        fail(f'root element is <{root.tag}>, not <policyconfig>')
    vendor = root.findtext('vendor')
    if (vendor or '').strip() != 'Cistern':
        fail(f'<vendor> is {vendor!r}, not "Cistern"')

    seen = set()
    for action in root.findall('action'):
        aid = action.get('id')
        if aid in seen:
            fail(f'{aid}: declared twice')
            continue
        seen.add(aid)
        if aid not in EXPECTED:
            fail(f'{aid}: not an action of SPEC §5')
            continue
        check_action(aid, action)
    for aid in sorted(set(EXPECTED) - seen):
        fail(f'{aid}: missing')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--xmllint', help='path to xmllint (skipped when not given)')
    parser.add_argument('policy')
    args = parser.parse_args()

    if args.xmllint:
        run_xmllint(args.xmllint, args.policy)
    try:
        check_policy(args.policy)
    except ET.ParseError as e:
        fail(f'{args.policy}: {e}')

    for e in errors:
        print(f'{args.policy}: {e}', file=sys.stderr)
    if errors:
        return 1
    print(f'{args.policy}: {len(EXPECTED)} actions match SPEC §5')
    return 0


if __name__ == '__main__':
    sys.exit(main())
