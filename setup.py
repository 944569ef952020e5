"""Build the compiled core, zcloop._ring, against liburing.

liburing is linked statically when liburing.a is present, so the built
extension needs no liburing runtime package.
"""
import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

LIBURING_HINT = (
    "zcloop needs the liburing headers to build: install 'liburing-dev' "
    "(Debian/Ubuntu: apt-get install liburing-dev) or 'liburing-devel' "
    "(Fedora/RHEL), or set LIBURING_PREFIX to a liburing install prefix."
)


def find_liburing():
    prefixes = [os.environ.get("LIBURING_PREFIX"), "/usr", "/usr/local"]
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for prefix in filter(None, prefixes):
        header = os.path.join(prefix, "include", "liburing.h")
        if not os.path.exists(header):
            continue
        libdirs = [os.path.join(prefix, "lib", multiarch), os.path.join(prefix, "lib64"),
                   os.path.join(prefix, "lib")]
        for libdir in libdirs:
            static = os.path.join(libdir, "liburing.a")
            if os.path.exists(static):
                return os.path.join(prefix, "include"), static, None
        return os.path.join(prefix, "include"), None, libdirs
    return None


def make_extension():
    found = find_liburing()
    if found is None:
        sys.exit("error: liburing.h not found. " + LIBURING_HINT)
    include_dir, static_lib, libdirs = found
    kwargs = dict(
        sources=["zcloop/_ring.pyx"],
        include_dirs=[include_dir, "zcloop/includes"],
        extra_compile_args=["-O2", "-fno-strict-aliasing", "-Wno-unused-function"],
        extra_link_args=[],
    )
    # The generated C is large: debug info makes the .so ~5x bigger
    # (ZCLOOP_DEBUG=1 or ZCLOOP_ASAN=1 keep it).
    if not (os.environ.get("ZCLOOP_DEBUG") or os.environ.get("ZCLOOP_ASAN")):
        kwargs["extra_compile_args"].append("-g0")
    if static_lib:
        kwargs["extra_objects"] = [static_lib]
        # liburing's functions stay private to the extension instead of
        # joining the process's dynamic symbol namespace.
        kwargs["extra_link_args"].append("-Wl,--exclude-libs,ALL")
    else:
        kwargs["library_dirs"] = libdirs
        kwargs["libraries"] = ["uring"]
    if os.environ.get("ZCLOOP_ASAN"):
        kwargs["extra_compile_args"] += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
        kwargs["extra_link_args"].append("-fsanitize=address")
    return Extension("zcloop._ring", **kwargs)


def cythonize(extensions):
    from Cython.Build import cythonize as _cythonize
    return _cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "boundscheck": False,
            "wraparound": True,
            # No "freethreading_compatible": on a free-threaded (GIL-free)
            # Python the import re-enables the GIL (docs/design.md says why).
        },
        annotate=bool(os.environ.get("ZCLOOP_ANNOTATE")),
    )


class build_ext(_build_ext):
    """Cythonize at build time only: `sdist` and `egg_info` need neither
    Cython nor liburing, and the sdist then carries the .pyx sources rather
    than the generated C."""

    def finalize_options(self):
        self.distribution.ext_modules = cythonize([make_extension()])
        super().finalize_options()


setup(ext_modules=[Extension("zcloop._ring", sources=["zcloop/_ring.pyx"])],
      cmdclass={"build_ext": build_ext})
