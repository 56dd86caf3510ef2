"""docs/troubleshooting.md covers the errors of the vault, Entra ID, TSA,
HTTP and `vault`/`doctor` code: every message set there (hs_error_set,
hs_error_ssl, cli_error) must appear in the table by its longest fixed
fragment. Internal errors (out of memory, encoding failures) are exempt.
A new message in those files without a row fails this test."""
import os
import re
import unittest

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DOC = os.path.join(TOP, "docs", "troubleshooting.md")
SOURCES = ("lib/keys/akv.c", "lib/keys/akv_admin.c", "lib/keys/akv_show.c",
           "lib/auth/entra.c", "lib/auth/credential.c", "lib/auth/token_federated.c",
           "lib/auth/token_cli.c", "lib/authenticode/timestamp.c", "lib/core/http.c",
           "lib/keys/aia.c", "cli/cmd_vault.c", "cli/vault_role.c", "cli/azure_args.c",
           "cli/cmd_doctor.c", "cli/secret.c")
CALL = re.compile(r"\b(hs_error_set|hs_error_ssl|cli_error)\s*\(")
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
SPEC = re.compile(r"%[-+ #0-9.*]*(?:ll|l|z|h)?[a-zA-Z%]")
INTERNAL = re.compile(r"^(internal|out of memory|cannot (encode|build|add|hash|set|start|"
                      r"create the rate)|libcurl|injected|signature value|hs_|no token scope)")


def call_text(src, start):
    """The argument text of the call whose '(' ends at start."""
    depth, i = 1, start
    while depth and i < len(src):
        c = src[i]
        if c == '"':
            i += 1
            while src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    return src[start:i - 1]


def messages(path):
    with open(os.path.join(TOP, path), encoding="utf-8") as f:
        src = f.read()
    for m in CALL.finditer(src):
        text = call_text(src, m.end())
        # The format is the first run of adjacent literals.
        fmt = LITERAL.match(text[text.index('"'):]) if '"' in text else None
        if fmt is None:
            continue
        pieces = re.match(r'((?:"(?:[^"\\]|\\.)*"\s*)+)', text[text.index('"'):]).group(1)
        yield "".join(LITERAL.findall(pieces)).replace('\\"', '"')


def key_fragment(message):
    parts = [p.strip(" :;,.()'") for p in SPEC.split(message)]
    return max(parts, key=len)


class TroubleshootingTest(unittest.TestCase):
    def test_every_message_has_a_row(self):
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        missing, checked = [], 0
        for path in SOURCES:
            for msg in messages(path):
                frag = key_fragment(msg)
                if len(frag) < 6 or INTERNAL.match(msg) or INTERNAL.match(frag):
                    continue
                checked += 1
                if frag not in doc:
                    missing.append("%s: %r" % (path, frag))
        self.assertGreater(checked, 60)
        self.assertEqual(missing, [], "messages without a troubleshooting row:\n" +
                         "\n".join(missing))


if __name__ == "__main__":
    unittest.main()
