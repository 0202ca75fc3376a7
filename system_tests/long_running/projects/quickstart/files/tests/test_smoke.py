import unittest

import tinyq


class SmokeTest(unittest.TestCase):
    def test_version(self):
        self.assertRegex(tinyq.__version__, r"^\d+\.\d+\.\d+$")


if __name__ == "__main__":
    unittest.main()
