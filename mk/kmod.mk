# camex.ko and the VM lab (owner: kmod). Included by the top Makefile.
#
#   make kmod [KDIR=...] [ARCH=...] [CROSS_COMPILE=...]   build kmod/camex.ko
#   make kmod-install [DESTDIR=...]   copy to lib/modules/<release>/extra + depmod
#   make kmod-clean                    remove build products from kmod/
#   make test-vm                       build + boot 6.1 and 6.12, guest tests (in `make test`)
#   make kmatrix                       every kernel of the matrix + a cross build, table
#   make bench-vm                      iperf3 via /dev/camex vs tun.ko in one VM (in `make bench`)
#   make vm-clean                      drop lab/vm/cache (downloaded kernels, builds, runs)

KDIR ?= /lib/modules/$(shell uname -r)/build
KMOD_DIR := $(CURDIR)/kmod
KMOD_ARGS := -C $(KDIR) M=$(KMOD_DIR) \
	$(if $(ARCH),ARCH=$(ARCH)) $(if $(CROSS_COMPILE),CROSS_COMPILE=$(CROSS_COMPILE)) \
	$(if $(CC_KMOD),CC=$(CC_KMOD))
# What the VM lab needs on a fresh Debian machine: QEMU (TCG), virtme-ng's
# initramfs tools, a compiler and kbuild's helpers for the Debian headers.
VM_APT := qemu-system-x86 busybox-static file binutils kmod xz-utils zstd debootstrap \
	make gcc-12 libc6-dev bc flex bison libelf-dev dwarves iproute2 iperf3 iputils-ping

.PHONY: kmod kmod-install kmod-clean kmod-check-kdir vm-deps test-vm kmatrix bench-vm vm-clean

kmod-check-kdir:
	@test -f $(KDIR)/Makefile || { \
	  echo "kmod: no kernel build tree at KDIR=$(KDIR)"; \
	  echo "kmod: pass KDIR=..., or unpack a Debian one: $(PY) -m lab.vm fetch 6.1"; \
	  exit 1; }

kmod: kmod-check-kdir
	$(MAKE) $(KMOD_ARGS) W=1 modules

kmod-install: kmod
	rel=$$(modinfo -F vermagic kmod/camex.ko | cut -d' ' -f1) && \
	install -D -m 0644 kmod/camex.ko $(DESTDIR)/lib/modules/$$rel/extra/camex.ko && \
	depmod $(if $(DESTDIR),-b $(DESTDIR)) -a $$rel

# Does not need KDIR: works after the kernel tree is gone.
kmod-clean:
	rm -f kmod/*.o kmod/*.ko kmod/*.mod kmod/*.mod.c kmod/.*.cmd kmod/.*.d \
	      kmod/modules.order kmod/Module.symvers
	rm -rf kmod/.tmp_versions

vm-deps:
	sh scripts/install-deps.sh $(VM_APT)

test-vm: vm-deps venv
	$(PYTEST) -q -p no:cacheprovider tests/lab

# The cross build of the matrix uses Debian's arm64 cross compiler.
kmatrix: vm-deps venv
	sh scripts/install-deps.sh gcc-12-aarch64-linux-gnu
	$(PY) -m lab.vm matrix

bench-vm: vm-deps venv
	$(PY) -m lab.vm bench

vm-clean:
	rm -rf --one-file-system lab/vm/cache   # never through a live chroot bind mount

distclean: kmod-clean vm-clean

TEST_SUITES += test-vm
BENCH_SUITES += bench-vm
