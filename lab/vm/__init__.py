"""The VM lab: camex.ko built for Debian kernels and tested in virtme-ng guests.

kernels.py  the kernel matrix; fetches image+headers .debs into cache/
build.py    builds camex.ko against one unpacked kernel
vm.py       boots one kernel with virtme-ng (TCG) and runs one command
guest.sh    what runs inside the guest: one pytest suite, results to a shared dir
run.py      fetch + build + one boot per kernel, results parsed from junit
__main__.py command line: python -m lab.vm {fetch,build,test,matrix,bench}
"""
