{
  "targets": [
    {
      "target_name": "userfaultfd",
      "sources": [
        "native/addon.c",
        "native/args.c",
        "native/fd.c",
        "native/memory.c",
        "native/poll.c",
        "native/process.c",
        "native/socket.c",
        "native/uffd.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
