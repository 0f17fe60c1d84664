# Debian packages (owner: packaging): camex and camex-dkms from debian/.
#
#   make deb        build dist/camex_<v>_all.deb and dist/camex-dkms_<v>_all.deb
#                   (dpkg-buildpackage, unsigned)
#   make deb-lint   lintian on the built packages
#   make test-deb   build, lint, install in a chroot, upgrade, remove, purge;
#                   dkms build for the VM lab's kernels, guest tests on it
#
# The build dependencies of debian/control, installed by the targets.
DEB_APT := build-essential debhelper dh-python dh-dkms pybuild-plugin-pyproject \
	python3-all python3-setuptools devscripts lintian fakeroot dkms

# test-deb also runs camex's tests under /usr/bin/python3 with Debian's
# own versions of what the package depends on.
DEB_TEST_APT := python3-cryptography python3-pyroute2 python3-pytest python3-hypothesis

.PHONY: deb deb-deps deb-lint test-deb

deb-deps:
	sh scripts/install-deps.sh $(DEB_APT)

# dpkg-buildpackage writes next to the source tree; the results move to dist/.
# Debian's python3 builds the package, whatever python3 comes first on PATH.
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
deb: deb-deps
	env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b
	mkdir -p dist
	v=$$(dpkg-parsechangelog -S Version) && \
	  mv ../camex_$${v}_all.deb ../camex-dkms_$${v}_all.deb ../camex_$${v}_*.changes ../camex_$${v}_*.buildinfo dist/
	@ls -l dist/*.deb

deb-lint: deb
	lintian -I -E --pedantic --show-overrides dist/*.changes

test-deb: deb-deps vm-deps venv
	sh scripts/install-deps.sh $(DEB_TEST_APT)
	$(PYTEST) -q -rA -p no:cacheprovider tests/packaging

distclean: deb-clean
.PHONY: deb-clean
deb-clean:
	rm -rf dist debian/man debian/.debhelper debian/camex debian/camex-dkms debian/files \
	       debian/*.substvars debian/*.debhelper.log debian/debhelper-build-stamp .pybuild

TEST_SUITES += test-deb
