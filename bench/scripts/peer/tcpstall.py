# tcpstall.py server ADDR [FROM TO] | client ADDR SECONDS: a TCP flow (port 5001) whose receiver
# prints its longest gap between two reads of data that overlaps FROM..TO seconds after the flow
# began (the event under test) and the longest elsewhere (the flow's own loss recovery).
import socket, sys, time
mode = sys.argv[1]
if mode == 'server':
    lo, hi = (float(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) > 4 else (0, 1e9)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 5001)); s.listen(1)
    c, _ = s.accept(); start = time.time(); last = None; total = 0
    event = other = (0.0, 0.0)
    while True:
        b = c.recv(1 << 16)
        if not b: break
        now = time.time() - start; total += len(b)
        if last is not None:
            gap = (now - last, last)
            if now >= lo and last <= hi: event = max(event, gap)
            else: other = max(other, gap)
        last = now
    print("longest gap around the event %.3f s (at %.2f s); elsewhere %.3f s (at %.2f s); %.1f Mbit/s"
          % (event[0], event[1], other[0], other[1], total * 8 / last / 1e6))
else:
    c = socket.create_connection((sys.argv[2], 5001)); end = time.time() + float(sys.argv[3]); buf = b'x' * 65536
    while time.time() < end: c.send(buf)
    c.close()
