import streamlit as st
st.title('Datasets')
st.info('coming soon')
