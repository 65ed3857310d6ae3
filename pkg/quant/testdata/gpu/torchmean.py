import torch, itertools, sys, struct
F=lambda x,y: struct.unpack('f',struct.pack('f',x+y))[0]
torch.manual_seed(0)
def lastpow2(n):
    p=1
    while p*2<=n: p*=2
    return p
def tree(v):
    v=list(v); dim=len(v)
    f=F
    if dim>32:
        off=dim//2
        while off>=32:
            for t in range(off): v[t]=f(v[t],v[t+off])
            off//=2
        dim=32
    lanes=v[:dim]; off=1
    while off<dim:
        lanes=[f(lanes[t], lanes[t+off] if t+off<dim else lanes[t]) for t in range(dim)]
        off*=2
    return lanes[0]
def emul(a, vec=4, thr=128, maxthr=512, sms=132):
    a=a.tolist(); n=len(a)
    f=F
    vectorize = n>thr
    dim0 = n//vec if vectorize else n
    bw = min(lastpow2(dim0), maxthr) if dim0<maxthr else maxthr
    ctas=1
    vpt=(n+bw-1)//bw
    if vpt>=256:
        c1=sms*(2048//bw); c2=(vpt+15)//16; c3=(vpt+255)//256
        ctas=max(min(c1,c2),c3)
    partial=[]
    for c in range(ctas):
        vals=[]
        for t in range(bw):
            acc=[0.0]*vec
            if vectorize:
                idx=t+c*bw; stride=bw*ctas
                while idx*vec+vec-1<n:
                    for i in range(vec): acc[i]=f(acc[i],a[idx*vec+i])
                    idx+=stride
                if c==0:
                    i=n-n%vec+t
                    if i<n: acc[0]=f(acc[0],a[i])
            else:
                idx=t
                for i in range(4):
                    if idx>=n: break
                    acc[i]=f(acc[i],a[idx]); idx+=bw
            v=acc[0]
            for i in range(1,len(acc)): v=f(v,acc[i])
            vals.append(v)
        partial.append(tree(vals))
    if ctas==1: s=partial[0]
    else:
        vals=[]
        for t in range(bw):
            v=0.0
            for i in range(t,ctas,bw): v=f(v,partial[i])
            vals.append(v)
        s=tree(vals)
    fac=(torch.tensor(1.0,dtype=torch.float32)/torch.tensor(float(n),dtype=torch.float32))
    return (torch.tensor(s,dtype=torch.float32)*fac).item()
def f64(a):
    n=len(a); s=torch.tensor(a.double().sum().item(),dtype=torch.float32)
    fac=torch.tensor(1.0,dtype=torch.float32)/torch.tensor(float(n),dtype=torch.float32)
    return (s*fac).item()
def f64div(a):
    return torch.tensor(a.double().mean().item(), dtype=torch.float32).item()
variants={'emul4':lambda a:emul(a),'emul8':lambda a:emul(a,vec=8),'emul4_t64':lambda a:emul(a,thr=64),
 'emul4_1024':lambda a:emul(a,maxthr=1024),'f64':f64,'f64div':f64div,
 'sumdiv': lambda a: (a.cuda().sum()/len(a)).item()}
sizes=[int(x) for x in sys.argv[1].split(',')]
for n in sizes:
    hits={k:0 for k in variants}; T=int(sys.argv[2])
    for trial in range(T):
        a=(torch.randn(n).abs()*torch.exp(torch.randn(n)*3)).float()
        a=a.to(torch.bfloat16).float()
        ref=a.cuda().mean().item()
        for k,fn in variants.items():
            if fn(a)==ref: hits[k]+=1
    print(n, T, hits, flush=True)
