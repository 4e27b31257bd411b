"""The binding as a package: pip-installable, finds the library, typed and documented."""

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import oakuk
from _support import SOURCE_ROOT

BINDING = os.path.join(SOURCE_ROOT, "bindings", "python")
LIBRARY = os.environ.get("OAKUK_LIBRARY")
MODULES = ["oakuk", "oakuk.descriptor", "oakuk.model", "oakuk.aggregate", "oakuk.sched",
           "oakuk.console", "oakuk.image", "oakuk.runtime", "oakuk.net"]


def meson_version():
    with open(os.path.join(SOURCE_ROOT, "meson.build"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("version :"):
                return line.split("'")[1]
    raise AssertionError("no version in meson.build")


def public_members():
    """(qualified name, object) of every public function, class, method and property."""
    seen = set()
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            qual = "%s.%s" % (modname, name)
            yield qual, obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    if isinstance(value, (classmethod, staticmethod)):
                        value = value.__func__
                    if isinstance(value, property) or inspect.isfunction(value):
                        yield "%s.%s" % (qual, attr), value


def missing_annotations(fn):
    """Parameters (besides self/cls and the variadic ones) and return without annotations."""
    missing = []
    sig = inspect.signature(fn)
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if i == 0 and pname in ("self", "cls"):
            continue
        if param.annotation is inspect.Parameter.empty:
            missing.append(pname)
    if "return" not in fn.__annotations__:
        missing.append("return")
    return missing


class Documented(unittest.TestCase):
    def test_every_public_callable_has_a_docstring_and_annotations(self):
        problems = []
        count = 0
        for qual, obj in public_members():
            count += 1
            if isinstance(obj, property):
                if not (obj.__doc__ or "").strip():
                    problems.append("%s: property without a docstring" % qual)
                if obj.fget is not None and "return" not in obj.fget.__annotations__:
                    problems.append("%s: property without a return annotation" % qual)
                if obj.fset is not None and missing_annotations(obj.fset) not in ([], ["return"]):
                    problems.append("%s: setter without annotations" % qual)
                continue
            if not (inspect.getdoc(obj) or "").strip():
                problems.append("%s: no docstring" % qual)
            if inspect.isclass(obj):
                continue
            missing = missing_annotations(obj)
            if missing:
                problems.append("%s: not annotated: %s" % (qual, ", ".join(missing)))
        self.assertGreater(count, 150)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_the_walk_sees_what_it_must(self):
        names = {qual for qual, _ in public_members()}
        # each object once, under the first name it is exported as (oakuk's own __all__ first)
        for expected in ("oakuk.Runtime.deploy", "oakuk.InstanceSpec.kernel", "oakuk.ImageCache.fetch",
                         "oakuk.Net.instance_setup", "oakuk.Microservice.memory_mb", "oakuk.select_node",
                         "oakuk.console.tail", "oakuk.image.kernel_arch", "oakuk.Runtime.wait_status"):
            self.assertIn(expected, names)

    def test_py_typed(self):
        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(oakuk.__file__), "py.typed")))


class Version(unittest.TestCase):
    def test_one_version(self):
        self.assertEqual(oakuk.__version__, meson_version())
        self.assertEqual(oakuk.__version__, oakuk.version())
        with open(os.path.join(BINDING, "pyproject.toml"), encoding="utf-8") as f:
            pyproject = f.read()
        self.assertIn('dynamic = ["version"]', pyproject)
        self.assertIn('version = {attr = "oakuk._version.__version__"}', pyproject)


def python(*args, env=None, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


class FindsLibrary(unittest.TestCase):
    CODE = "import oakuk; print(oakuk.library_path()); print(oakuk.version())"

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if k not in ("OAKUK_LIBRARY", "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = BINDING
        env.update(extra)
        return env

    @unittest.skipUnless(LIBRARY, "OAKUK_LIBRARY names the built library")
    def test_soname_through_the_linker_search_path(self):
        # no OAKUK_LIBRARY: the soname is found where the dynamic linker looks
        lib_dir = os.path.dirname(os.path.realpath(LIBRARY))
        r = python(sys.executable, "-c", self.CODE, env=self.env(LD_LIBRARY_PATH=lib_dir))
        self.assertEqual(r.returncode, 0, r.stderr)
        path, version = r.stdout.split()
        self.assertEqual(os.path.realpath(path), os.path.realpath(LIBRARY))
        self.assertEqual(version, oakuk.__version__)

    def test_override_names_the_path_that_failed(self):
        bogus = os.path.join(tempfile.gettempdir(), "oakuk-no-such-lib.so.0")
        r = python(sys.executable, "-c", self.CODE, env=self.env(OAKUK_LIBRARY=bogus))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn("OAKUK_LIBRARY=" + bogus, r.stderr)

    def test_library_path_is_the_loaded_file(self):
        path = oakuk.library_path()
        self.assertTrue(os.path.isabs(path), path)
        if LIBRARY:
            self.assertEqual(os.path.realpath(path), os.path.realpath(LIBRARY))


class PipInstall(unittest.TestCase):
    """pip installs the binding offline (setuptools from the system, no build isolation) into a
    fresh venv, and the installed package works from outside the source tree."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oakuk-py-venv-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_venv_install(self):
        try:
            import setuptools  # noqa: F401  (the build backend, from the system)
        except ImportError:
            self.skipTest("setuptools is not installed (python3-setuptools)")
        venv = os.path.join(self.tmp, "venv")
        r = python(sys.executable, "-m", "venv", "--system-site-packages", venv)
        if r.returncode != 0:
            self.skipTest("python3 -m venv failed (python3-venv missing?): " + r.stderr[-500:])
        py = os.path.join(venv, "bin", "python")
        # the source tree stays clean: setuptools builds in a copy
        src = os.path.join(self.tmp, "src")
        shutil.copytree(BINDING, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PIP_NO_INDEX"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        r = python(py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", src,
                   env=env, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        r = python(py, "-m", "pip", "show", "-f", "oakuk", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Version: " + oakuk.__version__, r.stdout)
        self.assertIn("oakuk/py.typed", r.stdout)
        self.assertIn("oakuk/runtime.py", r.stdout)
        code = ("import oakuk, os; print(os.path.dirname(oakuk.__file__)); print(oakuk.__version__); "
                "print(oakuk.version())")
        r = python(py, "-c", code, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        where, version, libversion = r.stdout.split()
        self.assertTrue(where.startswith(venv), where)
        self.assertEqual((version, libversion), (oakuk.__version__, oakuk.version()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
