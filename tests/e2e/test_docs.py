"""docs/cli.md carries the reference generated from the CLI's own option tables."""
import os
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HSMSIGN = os.environ.get("HSMSIGN", os.path.join(HERE, "..", "..", "build", "hsmsign"))
CLI_MD = os.path.join(HERE, "..", "..", "docs", "cli.md")


class CliReferenceTest(unittest.TestCase):
    def test_cli_md_contains_generated_reference(self):
        ref = subprocess.run([HSMSIGN, "help-markdown"], check=True, capture_output=True,
                             text=True).stdout
        self.assertIn("## hsmsign sign", ref)
        with open(CLI_MD, encoding="utf-8") as f:
            doc = f.read()
        self.assertIn(ref, doc, "docs/cli.md is stale: regenerate its reference part "
                      "with 'scripts/gen-cli-doc'")


if __name__ == "__main__":
    unittest.main()
