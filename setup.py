"""Build the compiled core, zcloop._ring, against liburing.

liburing is linked statically when liburing.a is present, so the built
extension needs no liburing runtime package.
"""
import os
import sys
import sysconfig

from setuptools import Extension, setup

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
    )
    if static_lib:
        kwargs["extra_objects"] = [static_lib]
    else:
        kwargs["library_dirs"] = libdirs
        kwargs["libraries"] = ["uring"]
    if os.environ.get("ZCLOOP_ASAN"):
        kwargs["extra_compile_args"] += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
        kwargs["extra_link_args"] = ["-fsanitize=address"]
    return Extension("zcloop._ring", **kwargs)


def cythonize(ext):
    from Cython.Build import cythonize as _cythonize
    return _cythonize(
        [ext],
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


setup(ext_modules=cythonize(make_extension()))
