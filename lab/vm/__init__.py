"""The VM lab: camex.ko built for Debian kernels and tested in virtme-ng guests.

kernels.py     the kernel matrix; fetches image+headers .debs into cache/
               through a private apt config (the host's apt is not touched)
chroot.py      debootstrap'ed trixie/sid chroots: builds for kernels whose
               kbuild needs a newer libc/gcc, and trixie's virtiofsd
build.py       builds camex.ko (W=1) against one unpacked kernel
cross.py       the arm64 cross build of the matrix
vm.py          boots one kernel with virtme-ng (TCG) and runs one command
guest.sh       runs inside the guest: one pytest suite, results to a shared dir
run.py         fetch + build + one boot per kernel; results parsed from junit
matrix.py      `make kmatrix`: every kernel, then a table
bench.py       `make bench-vm` (host side); bench_guest.py + relay.py in the guest
__main__.py    python -m lab.vm {fetch,build,test,matrix,bench}

Everything downloaded or built lives in lab/vm/cache/ (gitignored;
`make vm-clean` removes it).
"""
