#!/bin/sh
# Moves a running process through a dump and a lazy restore: usage criu-lazy-restore.sh PID DIR
# (DIR: an empty directory for the images). Needs root, CRIU >= 4.1 and `uffd` on the PATH.
set -eu
pid=$1
dir=$2

# 1. Dump the process: its state goes to image files in $dir, and it is killed. It must not hold a terminal
#    (start it with setsid and </dev/null >/dev/null), or criu needs --shell-job.
criu dump -t "$pid" -D "$dir" -o dump.log
# The restore needs the pid free again.
while [ -e "/proc/$pid" ]; do sleep 0.1; done

# 2. Start the lazy-pages daemon: it listens on $dir/lazy-pages.socket and, once it does, writes one NUL
#    byte to its status fd (here into the file $dir/ready).
uffd criu-lazy-pages -D "$dir" -o lazy.log --status-fd 3 3>"$dir/ready" &
daemon=$!
while [ ! -s "$dir/ready" ]; do sleep 0.05; done

# 3. Restore lazily and detach (-d): the process runs again at once. Each page it touches is served by the
#    daemon from the images on demand; after the restore the daemon copies the rest in the background.
criu restore -D "$dir" --lazy-pages -d -o restore.log

# 4. The daemon exits by itself: 0 once every page is in (or the process has exited), 1 if the restore
#    failed. Its log, $dir/lazy.log, has a summary line per process.
wait "$daemon"
tail -n 2 "$dir/lazy.log"
