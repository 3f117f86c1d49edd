# spore worker bootstrap (python -c): needs Python 3.6 (else exit 3); runs the source from fd 3 per '# ---' section
import os,sys
v=sys.version_info
if v<(3,6):
 sys.stderr.write("spore: Python %d.%d.%d at %s is too old: the worker needs 3.6 or newer\n"%(v[0],v[1],v[2],sys.executable));sys.exit(3)
def r(n):
 b=[];k=0
 while k<n:
  c=os.read(3,n-k)
  if not c:os._exit(4)
  b.append(c);k+=len(c)
 return b"".join(b)
n=b""
while 1:
 c=r(1)
 if c==b"\n":break
 n+=c
g={"__name__":"__spore_worker__","__file__":"spore_worker.py"};k=0;p=b""
for c in r(int(n)).split(b"\n# ---"):
 exec(compile(b"\n"*k+p+c,"spore_worker.py","exec"),g);k+=c.count(b"\n")+1;p=b"# ---"
